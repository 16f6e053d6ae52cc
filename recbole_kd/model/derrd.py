r"""DERRD
################################################
Reference:
    SeongKu Kang et al. "DE-RRD: A Knowledge Distillation Framework for Recommender System."
    in CIKM 2020.

The paper's full method: the student's own loss plus Distillation Experts (the teacher's latent
representations) plus Relaxed Ranking Distillation (the teacher's ranking), on the same batch.
"""

from recbole_kd.model.base import KnowledgeDistillationModel
from recbole_kd.model.de import DEDistiller
from recbole_kd.model.rrd import RRDDistiller


class DERRD(KnowledgeDistillationModel):
    """L = L_base + lambda_DE * L_DE + lambda_RRD * L_RRD."""

    needs_representations = True
    defaults_from = ("DE", "RRD")

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.distillers.append(DEDistiller(self, config))
        self.distillers.append(RRDDistiller(self, config))
