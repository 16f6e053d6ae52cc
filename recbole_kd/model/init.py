"""A backbone's initial weights: its RecBole model's own, PyTorch's, or N(0, init_std) embeddings.

The DE-RRD reference code initialises BPR's user and item tables from N(0, 0.01); RecBole's BPR
uses xavier_normal (std sqrt(2 / (rows + dim)), about 0.009 for CiteULike-t's item table at
d = 20, but 0.02 for its user table). ``init_std`` reproduces the reference. It is read from the
config the model is built with, so it reaches every model the runner builds the same way:
a plain RecBole run, a model trained alone before distillation, the distilled student and BD's
two models (set it at the top level, or per role inside ``teacher_config`` / ``student_config``).

Reference code that builds its layers without initialising them (the BD authors' CDAE notebook)
trains from PyTorch's own initialisation: N(0, 1) embeddings, uniform Linear weights and biases.
RecBole's CDAE draws every weight from xavier_normal and zeroes the biases instead: on
CiteULike-t a CDAE-5's user table starts 50 times smaller, its decoder 30 times.
``init_layers: torch`` gives the reference's.
"""

from __future__ import annotations

from torch import nn

from recbole_kd.model.row_loss import use_sampled_loss

KEY = "init_std"
LAYERS_KEY = "init_layers"


def initialise(model: nn.Module, config) -> nn.Module:
    """Reset every layer of ``model`` to PyTorch's own initialisation if ``config[init_layers]``
    is ``torch``, then redraw every embedding table from N(0, ``config[init_std]``), in place; a
    CDAE built with ``cdae_negatives`` gets its sampled loss (:mod:`recbole_kd.model.row_loss`).

    Called right after the model is built, from the global generator that built it, so that two
    models built from the same seed in the same order (the student alone, the distilled student)
    start from the same weights. ``init_std`` alone leaves the other layers (NeuMF's MLP) as built.
    """
    use_sampled_loss(model, config)
    if config[LAYERS_KEY] == "torch":
        for module in model.modules():
            if module is not model and hasattr(module, "reset_parameters"):
                module.reset_parameters()
    std = config[KEY]  # checked with the config (key_checks.VALUE_RULES)
    if std is None:
        return model
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:  # as nn.Embedding keeps it: a zero row
                module.weight.data[module.padding_idx].zero_()
    return model
