"""Model lookup by name: recbole_kd's distillation models first, then RecBole's models."""

from __future__ import annotations

from recbole_kd.model.base import KnowledgeDistillationModel
from recbole_kd.model.bd import BD
from recbole_kd.model.cd import CD
from recbole_kd.model.dcd import DCD
from recbole_kd.model.de import DE
from recbole_kd.model.derrd import DERRD
from recbole_kd.model.htd import HTD
from recbole_kd.model.rd import RD
from recbole_kd.model.role_config import recbole_model
from recbole_kd.model.rrd import RRD

KD_MODELS: dict[str, type[KnowledgeDistillationModel]] = {
    model.__name__: model for model in (DE, RRD, DERRD, BD, RD, CD, DCD, HTD)
}


def is_kd_model(name: str) -> bool:
    return name in KD_MODELS


def get_model(model_name: str) -> type:
    """The model class named ``model_name``: a recbole_kd model, else one of RecBole's."""
    if model_name in KD_MODELS:
        return KD_MODELS[model_name]
    return recbole_model(
        model_name, f": not a recbole_kd model ({', '.join(KD_MODELS)}) nor a RecBole model")
