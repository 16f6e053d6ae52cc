"""recbole_kd: knowledge distillation for top-K recommenders, as a RecBole plugin."""

import os

# torch >= 2.6 loads with weights_only=True by default, and every RecBole checkpoint pickles its
# Config: RecBole's own loads (best model, resume, load_data_and_model) would fail without this.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

__version__ = "0.1.0"
