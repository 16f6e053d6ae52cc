"""Speed of the kernels that dominate distillation's training step, forward + backward.

- DE: one :class:`DistillationExperts` module on a batch of entities, through the dense path and
  the sparse path (only (entity, expert) pairs with z != 0) at several Gumbel-softmax temperatures,
  with the share of non-zero z that the sparse path's cost follows. The selector is near-uniform, as
  at the start of training, so the noise alone decides how many weights underflow to 0.
- RRD: :func:`relaxed_ranking_loss` against the running-shift (``logcumsumexp``) formulation it
  replaced, on ordinary scores and on scores spread over +-1e4 (which take the exact fallback).
- Scoring sampled items (RRD's K + L items per user, BD's items): the student's scores of users x
  item lists from its embeddings, as ``Backbone.score`` does it (:func:`list_scores`: rows gathered,
  broadcast product summed, the table's gradient accumulated feature-major) against the same
  product under autograd and against the module call and ``einsum``, at ml-100k's and
  CiteULike-t's numbers of items.
- CDAE's training rows (BD between CDAEs, its warm-ups): one batch of 128 users of a
  CiteULike-t-sized CDAE, its own loss over the training items and 5 x |I_u| sampled negatives,
  as recbole_kd computes it (``row_loss_and_logits``: dropout drawn on the rows' non-zero entries,
  negatives by rejection, the loss gathered at (row, item) pairs) against the dense computation
  it replaced (RecBole's ``CDAE.forward``, whose dropout draws for every item, and a dense mask of
  negatives drawn by inverting running counts of free items).
- Subnormal floats (``kd_flush_denormal``): one dense DE forward + backward with expert weights
  z = softmax(spread x N(0, 1)), whose smallest entries fall into float32's subnormal range as
  the spread grows (as the unchosen experts' Gumbel weights do while the temperature falls),
  computed with IEEE subnormals and with subnormals flushed to zero.
- The optimizer step over what DE trains (both expert modules, the student's embedding tables):
  RecBole's Adam against the fused kernel recbole_kd builds (``kd_fused_optimizer``).

Defaults are the ml-100k DE-RRD setting: ~3,000 unique users and items per batch of 2,048 triples,
d_s = 20, d_t = 200, M = 30; ~800 users with K = L = 40. Times are medians (and minima, steadier
on a shared machine) of ``--repeats`` runs after one warm-up, in milliseconds.

    python benchmarks/kernels.py --threads 2 [--tables de rrd scoring cdae denormals optimizer]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from recbole.model.general_recommender import CDAE
from torch import Tensor
from torch.nn import functional as F

from recbole_kd.kernels.denormals import denormals_flushed
from recbole_kd.kernels.fused_optimizer import fused_copy
from recbole_kd.kernels.list_scores import list_scores
from recbole_kd.model.layers import DistillationExperts
from recbole_kd.model.loss import expert_reconstruction_loss, relaxed_ranking_loss
from recbole_kd.model.row_loss import KEY as CDAE_NEGATIVES
from recbole_kd.model.row_loss import _draw_free_items_exactly, row_loss_and_logits


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--batch", type=int, default=3000, help="entities per DE call")
    parser.add_argument("--student-dim", type=int, default=20)
    parser.add_argument("--teacher-dim", type=int, default=200)
    parser.add_argument("--experts", type=int, default=30)
    parser.add_argument("--taus", type=float, nargs="+", default=[1.0, 0.1, 0.01, 1e-3, 1e-10])
    parser.add_argument("--users", type=int, default=800, help="users per RRD call")
    parser.add_argument("--interesting", type=int, default=40, help="K")
    parser.add_argument("--uninteresting", type=int, default=40, help="L")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tables", nargs="+", choices=list(TABLES), default=list(TABLES),
                        help="which tables to measure (default: all)")
    return parser.parse_args()


def time_ms(steps: list[Callable[[], object]], repeats: int) -> list[tuple[float, float]]:
    """Median and minimum wall time in ms of each step, after one untimed warm-up each.

    The steps take turns within every repeat, so that load from other processes on a shared
    machine falls on all of them alike rather than on whichever ran during a busy spell.
    """
    for step in steps:
        step()
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(repeats):
        for step, record in zip(steps, times):
            start = time.perf_counter()
            step()
            record.append((time.perf_counter() - start) * 1e3)
    return [(statistics.median(record), min(record)) for record in times]


def fmt(timing: tuple[float, float]) -> str:
    """'median / min' in ms, one decimal."""
    return f"{timing[0]:.1f} / {timing[1]:.1f}"


def de_step(
    experts: DistillationExperts, student: Tensor, teacher: Tensor, tau: float, sparse: bool | None
) -> Callable[[], Tensor]:
    """One DE forward + backward with fixed Gumbel noise, so every path sees the same z."""

    def step() -> Tensor:
        z = experts.selection(teacher, tau, torch.Generator().manual_seed(1))
        return expert_backward(experts, student, teacher, z, sparse)

    return step


def expert_backward(experts: DistillationExperts, student: Tensor, teacher: Tensor, z: Tensor,
                    sparse: bool | None) -> Tensor:
    """DE's reconstruction from the weights ``z`` and its backward, from cleared gradients."""
    experts.zero_grad(set_to_none=True)
    student.grad = None
    reconstruction = experts.reconstruct(student, z, sparse=sparse)
    expert_reconstruction_loss(teacher, reconstruction).sum().backward()
    return reconstruction.detach()


def de_table(args: argparse.Namespace) -> list[str]:
    experts = DistillationExperts(args.student_dim, args.teacher_dim, args.experts)
    # Near-uniform selection, as at the start of training: alpha ~ 1/M for every entity.
    with torch.no_grad():
        experts.selector.weight.mul_(1e-2)
    student = torch.randn(args.batch, args.student_dim, requires_grad=True)
    teacher = torch.randn(args.batch, args.teacher_dim)
    rows = [
        "| tau | non-zero z | dense ms | sparse ms | auto ms | dense / auto | max abs diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for tau in args.taus:
        z = experts.selection(teacher, tau, torch.Generator().manual_seed(1))
        share = torch.count_nonzero(z).item() / z.numel()
        dense, sparse, auto = time_ms(
            [de_step(experts, student, teacher, tau, mode) for mode in (False, True, None)],
            args.repeats,
        )
        dense_out, sparse_out = (
            de_step(experts, student, teacher, tau, mode)() for mode in (False, True)
        )
        diff = (dense_out - sparse_out).abs().max().item()
        rows.append(
            f"| {tau:g} | {share:.3f} | {fmt(dense)} | {fmt(sparse)} | {fmt(auto)} "
            f"| {dense[0] / auto[0]:.1f}x | {diff:.1e} |"
        )
    return rows


def running_shift_loss(interesting: Tensor, uninteresting: Tensor) -> Tensor:
    """The previous RRD loss, the baseline: logcumsumexp (a sequential scan) for every row."""
    tail = torch.logcumsumexp(interesting.flip(-1), dim=-1).flip(-1)
    below = torch.logsumexp(uninteresting, dim=-1, keepdim=True)
    return (torch.logaddexp(tail, below) - interesting).sum(dim=-1)


def rrd_step(
    loss: Callable[[Tensor, Tensor], Tensor], scores: tuple[Tensor, Tensor]
) -> Callable[[], None]:
    """One forward + backward of an RRD loss on fixed scores."""
    return lambda: loss(*scores).sum().backward()


def rrd_table(args: argparse.Namespace) -> list[str]:
    rows = ["| RRD scores | relaxed_ranking_loss ms | logcumsumexp ms |", "|---|---|---|"]
    for label, scale in (("randn", 1.0), ("+-1e4 (fallback)", 1e4)):
        scores = (
            (torch.randn(args.users, args.interesting) * scale).requires_grad_(),
            (torch.randn(args.users, args.uninteresting) * scale).requires_grad_(),
        )
        timings = time_ms(
            [rrd_step(loss, scores) for loss in (relaxed_ranking_loss, running_shift_loss)],
            args.repeats,
        )
        rows.append(f"| {label} | {fmt(timings[0])} | {fmt(timings[1])} |")
    return rows


def scoring_step(items: Tensor, user_e: Tensor, item_weight: Tensor, variant: str):
    """Scores of users x item lists from embedding tables, forward + backward."""

    def step() -> None:
        item_weight.grad = user_e.grad = None
        if variant == "list_scores":  # Backbone.score
            scores = list_scores(user_e, item_weight, items)
        elif variant == "index_select":
            item_e = item_weight.index_select(0, items.reshape(-1)).view(*items.shape, -1)
            scores = (item_e * user_e.unsqueeze(1)).sum(-1)
        else:
            item_e = torch.nn.functional.embedding(items.reshape(-1), item_weight)
            scores = torch.einsum("bd,bnd->bn", user_e, item_e.view(*items.shape, -1))
        scores.sum().backward()

    return step


def scoring_table(args: argparse.Namespace) -> list[str]:
    header = "| items | list_scores ms | index_select + product, autograd ms | nn.Embedding + einsum ms |"
    rows = [header, "|---|---|---|---|"]
    per_user = args.interesting + args.uninteresting
    for n_items in (1683, 25182):  # ml-100k, CiteULike-t
        items = torch.randint(n_items, (args.users, per_user))
        user_e = torch.randn(args.users, args.student_dim, requires_grad=True)
        item_weight = torch.randn(n_items, args.student_dim, requires_grad=True)
        timings = time_ms(
            [scoring_step(items, user_e, item_weight, variant)
             for variant in ("list_scores", "index_select", "einsum")],
            args.repeats,
        )
        rows.append(f"| {n_items} | " + " | ".join(fmt(t) for t in timings) + " |")
    return rows


class SyntheticRows:
    """What RecBole's CDAE reads from a Dataset, for ``n_users`` users of CiteULike-t-like
    activity (degrees 3 + geometric, mean about 22) over ``n_items`` items; id 0 pads."""

    def __init__(self, n_users: int, n_items: int, generator: torch.Generator):
        degrees = 3 + torch.distributions.Geometric(1 / 20).sample((n_users,)).long()
        ids = torch.zeros(n_users, int(degrees.max()), dtype=torch.long)
        for user, degree in enumerate(degrees.tolist()):  # setup only, not timed
            ids[user, :degree] = 1 + torch.randperm(n_items - 1, generator=generator)[:degree]
        self.ids, self.degrees, self.sizes = ids, degrees, {"user_id": n_users, "item_id": n_items}

    def num(self, field: str) -> int:
        return self.sizes[field]

    def history_item_matrix(self):
        return self.ids, (self.ids > 0).float(), self.degrees


def cdae(rows: SyntheticRows, hidden: int, negatives: int) -> CDAE:
    config = {"USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "NEG_PREFIX": "neg_",
              "device": torch.device("cpu"), "embedding_size": hidden, "corruption_ratio": 0.5,
              "hid_activation": "sigmoid", "out_activation": "sigmoid", "loss_type": "BCE",
              "reg_weight_1": 0.0, "reg_weight_2": 0.0}
    model = CDAE(config, rows).train()
    setattr(model, CDAE_NEGATIVES, negatives)
    return model


def dense_row_loss(model: CDAE, users: Tensor) -> Tensor:
    """The loss of :func:`row_loss_and_logits` by the dense computation it replaced."""
    rows = model.get_rating_matrix(users)
    logits = model.forward(rows, users)  # RecBole's dropout: a draw for every item
    positive = rows > 0
    owner = torch.repeat_interleave(torch.arange(len(users)),
                                    model.cdae_negatives * positive.sum(dim=1))
    mask = positive.clone()
    mask[owner, _draw_free_items_exactly(positive, owner)] = True
    return F.binary_cross_entropy_with_logits(logits[mask], rows[mask], reduction="sum")


def cdae_table(args: argparse.Namespace) -> list[str]:
    """One training batch of users of a CDAE with CiteULike-t's numbers of users and items."""
    rows = SyntheticRows(5219, 25183, torch.Generator().manual_seed(args.seed))
    users = torch.randperm(5219)[:128]
    table = ["| hidden | dense (RecBole's forward, dense mask) ms | recbole_kd's rows ms | ratio |",
             "|---|---|---|---|"]
    for hidden in (5, 50):
        model = cdae(rows, hidden, negatives=5)
        steps = [lambda model=model: dense_row_loss(model, users).backward(),
                 lambda model=model: row_loss_and_logits(model, users)[0].backward()]
        dense, fast = time_ms(steps, args.repeats)
        table.append(f"| {hidden} | {fmt(dense)} | {fmt(fast)} | {dense[0] / fast[0]:.2f} |")
    return table


def denormals_table(args: argparse.Namespace) -> list[str]:
    """Dense DE steps whose weights z reach into the subnormal range, IEEE against flushed."""
    experts = DistillationExperts(args.student_dim, args.teacher_dim, args.experts)
    student = torch.randn(args.batch, args.student_dim, requires_grad=True)
    teacher = torch.randn(args.batch, args.teacher_dim)
    tiny = torch.finfo(torch.float32).tiny
    rows = ["| spread | subnormal z | IEEE ms | flushed ms | IEEE / flushed |", "|---|---|---|---|---|"]
    for spread in (1, 20, 40, 60, 100):
        z = torch.softmax(torch.randn(args.batch, args.experts) * spread, dim=-1)
        step = partial(expert_backward, experts, student, teacher, z, False)
        # A context manager made by contextlib also decorates: each call runs inside the block.
        ieee, flush = time_ms([step, denormals_flushed()(step)], args.repeats)
        share = ((z > 0) & (z < tiny)).float().mean().item()
        rows.append(f"| {spread} | {share:.3f} | {fmt(ieee)} | {fmt(flush)} | "
                    f"{ieee[0] / flush[0]:.1f}x |")
    return rows


def optimizer_step(params: list[torch.nn.Parameter], fused: bool) -> Callable[[], None]:
    """One Adam step over ``params`` (gradients already set), RecBole's kernel or the fused one."""
    optimizer = torch.optim.Adam(params, lr=1e-3)
    if fused:
        optimizer = fused_copy(optimizer)
    return optimizer.step


def optimizer_table(args: argparse.Namespace) -> list[str]:
    """Adam over what DE trains on ml-100k: both expert modules and the student's tables."""
    modules = [DistillationExperts(args.student_dim, args.teacher_dim, args.experts) for _ in "ui"]
    tables = [torch.nn.Parameter(torch.randn(n, args.student_dim)) for n in (944, 1683)]
    rows = ["| parameters | RecBole's Adam ms | fused Adam ms |", "|---|---|---|"]
    params = [p for module in modules for p in module.parameters()] + tables
    grads = [torch.randn_like(param) for param in params]
    # Separate copies with the same gradients, so each optimizer keeps its own moments.
    copies = [[torch.nn.Parameter(p.detach().clone()) for p in params] for _ in range(2)]
    for copy in copies:
        for param, grad in zip(copy, grads):
            param.grad = grad.clone()
    timings = time_ms([optimizer_step(copies[0], False), optimizer_step(copies[1], True)],
                      args.repeats)
    count = sum(p.numel() for p in params)
    rows.append(f"| {count:,} | {fmt(timings[0])} | {fmt(timings[1])} |")
    return rows


TABLES = {"de": de_table, "rrd": rrd_table, "scoring": scoring_table, "cdae": cdae_table,
          "denormals": denormals_table, "optimizer": optimizer_table}


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    print(
        f"DE: B={args.batch}, d_s={args.student_dim}, d_t={args.teacher_dim}, M={args.experts}; "
        f"RRD: U={args.users}, K={args.interesting}, L={args.uninteresting}; "
        f"{torch.get_num_threads()} threads; forward + backward, median / min ms of "
        f"{args.repeats}\n"
    )
    for name in args.tables:
        print("\n".join(TABLES[name](args)) + "\n")


if __name__ == "__main__":
    main()
