"""The shared base of the distillation models: a student, a frozen teacher and distillers.

A distillation model is a RecBole recommender that owns two ordinary RecBole models. It trains
and evaluates as the student; the teacher is frozen (eval mode, no gradients, not in the
optimizer). Each method adds one or more ``Distiller`` terms to the student's own loss.

Methods are written against *queries*: what a model scores against items. For general models a
query is a user; for sequential ones a training row (a prefix of a user's history), identified
by its position among the training rows (:mod:`recbole_kd.model.sequential_backbone`). Per-query
state (top-N lists, rank-discrepancy pools) is indexed by query id either way, and a query's
positives (the items never drawn as negatives) are the user's training items, or the row's
target.
"""

from __future__ import annotations

from itertools import chain

import numpy as np
import scipy.sparse as sp
import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType
from torch import Tensor, nn

from recbole_kd import checkpoint, sharding
from recbole_kd.errors import BackboneError
from recbole_kd.model.backbone import (
    SCORE_METHODS,
    Backbone,
    check_general_model,
    check_representations,
    clear_caches,
)
from recbole_kd.model.ensemble import EnsembleBackbone, TeacherEnsemble
from recbole_kd.model.init import initialise
from recbole_kd.model.role_config import backbone_class, derive_config
from recbole_kd.model.sequential_backbone import (
    QUERY_FIELD,
    QueryRows,
    SequentialBackbone,
    check_sequential_model,
    has_sequence_representations,
    is_sequential,
)


class Distiller(nn.Module):
    """One distillation term. ``name`` labels its loss in the logs."""

    name = "kd"
    # Whether the term reads the teacher after prepare(). When no term does, the model drops
    # its frozen teacher once prepared (see KnowledgeDistillationModel.releases_teacher).
    reads_teacher_after_prepare = True

    def __init__(self, model: KnowledgeDistillationModel):
        super().__init__()
        # Plain attributes, not submodules: the models belong to the distillation model.
        self.student_net, self.teacher_net = model.student_net, model.teacher_net
        self.n_users, self.n_items = model.n_queries, model.n_items  # queries: see the module
        self.positives = model.positives  # each query's positives, CSR [n_queries, n_items]
        self.users = model.owned_users  # the queries whose state this process keeps
        self.user_queries = model.user_queries  # a user's query where users are ranked

    def prepare(self) -> None:
        """One-time work that needs the trained teacher (caches, top-N lists)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Per-epoch work: resampling, temperature."""

    def forward(self, user: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        raise NotImplementedError


class KnowledgeDistillationModel(GeneralRecommender):
    """Student + frozen teacher; the loss is the student's own plus each distiller's term.

    The batch is always (user, positive, negative) triples; pointwise students and teachers get
    them as labelled pairs (see ``Backbone.base_loss``).
    """

    input_type = InputType.PAIRWISE
    needs_representations = False  # DE reads the models' user and item vectors
    teacher_trainable = False  # BD trains both models
    takes_ensemble = False  # distils from several teachers' rank aggregate (``teachers``)
    pretrained_roles = ("teacher",)  # models trained (or loaded) before distillation
    exported_roles = ("student",)  # models saved as plain RecBole checkpoints after it
    defaults_from: tuple[str, ...] = ()  # methods whose property files hold this one's defaults
    teacher_fingerprint: str | None = None  # of the released teacher's weights (resume check)

    @classmethod
    def trains_on_user_batches(cls, config) -> bool:
        """Whether training batches are of users (RecBole's ``UserDataLoader``) rather than
        (user, positive, negative) triples: only BD between two user-row models."""
        return False

    @classmethod
    def check_backbone(cls, role: str, model_name: str) -> None:
        """Refuse a teacher or student model this method cannot use, naming the role."""
        model_class = backbone_class(model_name, role)
        if is_sequential(model_class):
            check_sequential_model(model_class, role)
            if cls.needs_representations and not has_sequence_representations(model_class):
                raise BackboneError(
                    f"{cls.__name__} needs the {role} model's sequence representation, which "
                    f"recbole_kd reads from SASRec, GRU4Rec, NARM, STAMP, LightSANs and Caser; "
                    f"'{model_name}' has none it reads. Use {', '.join(SCORE_METHODS)} with it "
                    "(they distil through scores), or another model.")
            return
        check_general_model(model_class, role)
        if cls.needs_representations:
            check_representations(model_class, role)

    @classmethod
    def check_teachers(cls, config) -> None:
        """Refuse several teachers for a method that cannot distil from their ensemble."""
        if config["teachers"] is not None and not cls.takes_ensemble:
            raise BackboneError(
                f"{cls.__name__} distils from a single teacher (it reads the teacher's "
                "representations, or trains it): several teachers (teachers) are for RRD, RD, "
                "CD and DCD. Set teacher_model instead, or use one of those methods.")

    @classmethod
    def check_pair(cls, teacher: str, student: str) -> None:
        """Refuse a teacher and a student of different families (general, sequential): they
        score different queries (users, or training rows)."""
        kinds = {role: is_sequential(backbone_class(name, role))
                 for role, name in (("teacher", teacher), ("student", student))}
        if kinds["teacher"] != kinds["student"]:
            family = {True: "a sequential", False: "a general"}
            raise BackboneError(
                f"teacher_model {teacher} is {family[kinds['teacher']]} recommender and "
                f"student_model {student} is {family[kinds['student']]} one: {cls.__name__} "
                "distils between models that score the same queries. Choose a teacher and a "
                "student of the same family (e.g. SASRec and GRU4Rec, or BPR and LightGCN).")

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        # The student is built first, so its initial weights equal those of the same model trained
        # alone from the same seed: the comparison with the student alone is fair.
        self.student_config = derive_config(
            config, config["student_model"], config["student_config"], "student"
        )
        self.student = initialise(
            self.student_config.model_class(self.student_config, dataset), self.student_config
        )
        members = teacher_specs(config)
        configs = [derive_config(config, spec["model"], spec.get("config"), "teacher")
                   for spec in members]
        teachers = [initialise(c.model_class(c, dataset), c) for c in configs]
        self.ensemble = config["teachers"] is not None
        self.teacher_config = configs if self.ensemble else configs[0]
        self.teacher = TeacherEnsemble(teachers) if self.ensemble else teachers[0]
        if not self.teacher_trainable:
            self.teacher.requires_grad_(False)
            self.teacher.eval()
        self.sequential = is_sequential(type(self.student))
        if self.sequential:
            rows = QueryRows(dataset, self.student)
            self.QUERY, self.n_queries = QUERY_FIELD, len(rows)
            self.student_net = SequentialBackbone(self.student, rows, self.student_config)
            nets = [SequentialBackbone(t, rows, c) for t, c in zip(teachers, configs)]
            self.positives = target_matrix(rows, self.n_items)
            self.owned_users = range(self.n_queries)
            # Where a method ranks users (DCD's item side), a user is its latest training row.
            self.user_queries = rows.latest_per_user()
        else:
            self.QUERY, self.n_queries = self.USER_ID, self.n_users
            self.user_queries = None  # users are the queries
            self.student_net = Backbone(self.student)
            nets = [Backbone(t) for t in teachers]
            self.positives = dataset.inter_matrix(form="csr")
            # The block of users this process trains on: every user, or its rank's (whole
            # chunks of kd_chunk_size users); per-user state is kept for those alone.
            self.owned_users = sharding.owned_users(dataset, config["kd_chunk_size"])
        self.teacher_net = EnsembleBackbone(self.teacher, nets) if self.ensemble else nets[0]
        self.distillers = nn.ModuleList()
        self._prepared = False
        if not self.teacher_trainable:
            self.register_load_state_dict_post_hook(_teacher_outside_checkpoints)

    @property
    def releases_teacher(self) -> bool:
        """Whether the frozen teacher is dropped once the distillers are prepared: true when
        every term reads it in ``prepare`` alone (DE's representations, RRD's top-N lists). Its
        weights then live in the run's teacher checkpoint only, not in this model's."""
        return not self.teacher_trainable and not any(
            d.reads_teacher_after_prepare for d in self.distillers)

    def role_model(self, role: str) -> GeneralRecommender:
        """The ``role`` ("teacher" or "student") model, refused once released."""
        model = getattr(self, role)
        if model is None:
            raise RuntimeError(
                f"{type(self).__name__} released its {role} once prepared (its distillers read "
                f"it then only): build a new model and load the {role} into it to use it again.")
        return model

    def release_teacher(self) -> None:
        """Drop the frozen teacher and every reference to its weights."""
        self.teacher = None
        if isinstance(self.teacher_net, EnsembleBackbone):
            self.teacher_net.release()
        else:
            self.teacher_net.model = None

    def frozen_teacher_names(self) -> list[str]:
        """The frozen teacher's weights and buffers, which DDP neither broadcasts nor holds:
        every rank loads the same teacher, and a released one must leave no reference behind."""
        if self.teacher_trainable or self.teacher is None:
            return []
        return [f"teacher.{name}" for name, _ in
                chain(self.teacher.named_parameters(), self.teacher.named_buffers())]

    # ----- pre-trained weights -----------------------------------------------------------------
    def load_pretrained(self, role: str, state_dict: dict) -> None:
        """Load the trained ``role`` ("teacher" or "student") model's weights; one-time
        preparation (teacher caches, top-N lists) follows at the next epoch."""
        model = self.role_model(role)
        model.load_state_dict(state_dict)
        clear_caches(model)
        self._prepared = False
        if role == "teacher" and self.releases_teacher:
            # Resume points then hold no teacher: this tells which one a run distilled.
            self.teacher_fingerprint = checkpoint.weights_fingerprint(state_dict)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        # Cached propagated embeddings belong to the old weights (LightGCN): never score with them.
        clear_caches(self.student)
        if self.teacher is not None:
            clear_caches(self.teacher)
        self._prepared = False
        return result

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.teacher_trainable and self.teacher is not None:
            self.teacher.eval()  # dropout off: the frozen teacher's outputs are fixed targets
        return self

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    # ----- training ---------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        """Called by the trainer before each training epoch."""
        if not self._prepared:
            self.role_model("teacher")  # preparation reads the teacher
            with torch.no_grad():
                for distiller in self.distillers:
                    distiller.prepare()
            self._prepared = True
            if self.releases_teacher:
                self.release_teacher()
        for distiller in self.distillers:
            distiller.on_epoch_start(epoch)

    @property
    def loss_names(self) -> list[str]:
        return [f"{self.student_net.name.lower()}_loss"] + [d.name for d in self.distillers]

    def triples(self, interaction) -> tuple[Tensor, Tensor, Tensor]:
        """(queries, positive items, negative items) of a training batch; a new step starts."""
        for net in (self.student_net, self.teacher_net):
            if hasattr(net, "new_step"):
                net.new_step()
        return (interaction[self.QUERY], interaction[self.ITEM_ID],
                interaction[self.NEG_ITEM_ID])

    def calculate_loss(self, interaction) -> tuple[Tensor, ...]:
        user, pos, neg = self.triples(interaction)
        base = self.student_net.base_loss(user, pos, neg)
        return (base, *(distiller(user, pos, neg) for distiller in self.distillers))

    # ----- evaluation: the student, unless the trainer evaluates the teacher -------------------
    eval_role = "student"

    def predict(self, interaction):
        return self.role_model(self.eval_role).predict(interaction)

    def full_sort_predict(self, interaction):
        if self.sequential:  # evaluation rows are the model's own batches
            return self.role_model(self.eval_role).full_sort_predict(interaction).reshape(-1)
        net = getattr(self, f"{self.eval_role}_net")
        return net.evaluation_scores(interaction[self.USER_ID]).reshape(-1)

    # ----- export ------------------------------------------------------------------------------
    def export(self, role: str, path: str, best_valid_score: float = 0.0) -> str:
        """Save the ``role`` model as a checkpoint of its own model that stock RecBole loads."""
        model = self.role_model(role)
        state = checkpoint.make(
            "export", getattr(self, f"{role}_config"), model.state_dict(), model.other_parameter(),
            best_valid_score=best_valid_score,
        )
        return checkpoint.atomic_save(state, path)


def teacher_specs(config) -> list[dict]:
    """The run's teachers as ``{model, config}`` specs: the list ``teachers``, or the one of
    ``teacher_model`` and ``teacher_config``."""
    if config["teachers"] is not None:
        return config["teachers"]
    return [{"model": config["teacher_model"], "config": config["teacher_config"]}]


def target_matrix(rows: QueryRows, n_items: int) -> sp.csr_matrix:
    """CSR [n_queries, n_items]: each query's positive, its row's target item (query 0, the
    padding, has none)."""
    target = rows.target.cpu().numpy()
    queries = np.arange(1, len(rows))
    return sp.csr_matrix((np.ones(len(target), dtype=np.float32), (queries, target)),
                         shape=(len(rows), n_items))


def _teacher_outside_checkpoints(model: KnowledgeDistillationModel, incompatible) -> None:
    """A frozen teacher's weights may be absent from a checkpoint: a released teacher's are
    never saved (the run's teacher checkpoint holds them). (A released teacher's weights in an
    older checkpoint are skipped by torch itself: its slot is None.)"""
    incompatible.missing_keys[:] = [
        k for k in incompatible.missing_keys if not k.startswith("teacher.")]
