"""A backbone's initial weights: its RecBole model's own, or N(0, init_std) embeddings.

The DE-RRD reference code initialises BPR's user and item tables from N(0, 0.01); RecBole's BPR
uses xavier_normal (std sqrt(2 / (rows + dim)), about 0.009 for CiteULike-t's item table at
d = 20, but 0.02 for its user table). ``init_std`` reproduces the reference. It is read from the
config the model is built with, so it reaches every model the runner builds the same way:
a plain RecBole run, a model trained alone before distillation, the distilled student and BD's
two models (set it at the top level, or per role inside ``teacher_config`` / ``student_config``).
"""

from __future__ import annotations

from torch import nn

from recbole_kd.model.row_loss import use_sampled_loss

KEY = "init_std"


def initialise(model: nn.Module, config) -> nn.Module:
    """Redraw every embedding table of ``model`` from N(0, ``config[init_std]``), in place; a
    CDAE built with ``cdae_negatives`` gets its sampled loss (:mod:`recbole_kd.model.row_loss`).

    Called right after the model is built, from the global generator that built it, so that two
    models built from the same seed in the same order (the student alone, the distilled student)
    start from the same weights. Other layers (NeuMF's MLP) keep their model's initialisation.
    """
    use_sampled_loss(model, config)
    std = config[KEY]  # checked with the config (key_checks.VALUE_RULES)
    if std is None:
        return model
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:  # as nn.Embedding keeps it: a zero row
                module.weight.data[module.padding_idx].zero_()
    return model
