"""The same tuning budget for every contender of a comparison: N trials of RecBole's HyperTuning
over a shipped search space, chosen on validation of the first seed, cached trial by trial.

Search spaces are ``properties/hyper/<Model>.hyper`` (a distillation method's: the learning rate,
the weight decay and its weights; BD's per role), else ``properties/hyper/alone.hyper`` (the
learning rate and the weight decay) for models trained by gradient descent; models without
training epochs (Pop, ItemKNN) have nothing to tune.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from recbole.utils import ModelType

from recbole_kd.errors import KDConfigError
from recbole_kd.properties import properties_dir
from recbole_kd.registry import get_model

TRIALS_FILE = "tuning.json"


def search_space(model: str) -> str | None:
    """The params file of ``model``'s search space; None when it has nothing to tune."""
    folder = os.path.join(properties_dir(), "hyper")
    own = os.path.join(folder, f"{model}.hyper")
    if os.path.isfile(own):
        return own
    if get_model(model).type == ModelType.TRADITIONAL:
        return None
    return os.path.join(folder, "alone.hyper")


class Tuner:
    """Chooses each contender's settings once, on validation, with ``budget`` trials each.

    Trials and choices are kept in ``<results_dir>/tuning.json``, so an interrupted comparison
    trains no trial twice.
    """

    def __init__(self, budget: int, results_dir: str, seed: int, progress=print):
        if budget < 1:
            raise KDConfigError(f"--tune {budget}: give at least one trial per contender.")
        self.budget, self.seed, self.progress = budget, seed, progress
        self.path = os.path.join(results_dir, TRIALS_FILE)
        self.store: dict = {}
        if os.path.isfile(self.path):
            with open(self.path, encoding="utf-8") as f:
                self.store = json.load(f)

    def chosen(self, name: str, model: str, config_dict: dict,
               train: Callable[[str, dict], dict]) -> dict:
        """The settings chosen for contender ``name``, tuned now if they are not known yet:
        ``train(model, config_dict)`` trains one trial and returns RecBole's result dict, whose
        ``best_valid_score`` decides (test metrics are never looked at)."""
        entry = self.store.setdefault(name, {"trials": {}})
        if "chosen" not in entry:
            space = search_space(model)
            entry["chosen"] = ({} if space is None
                               else self._search(entry, model, config_dict, space, train))
            self._save()
            self.progress(f"tuned {name}: {entry['chosen'] or 'nothing to tune'}")
        return entry["chosen"]

    def choices(self) -> dict[str, dict]:
        """Every contender's chosen settings, by name."""
        return {name: entry["chosen"] for name, entry in self.store.items() if "chosen" in entry}

    def _search(self, entry: dict, model: str, config_dict: dict, space: str,
                train: Callable[[str, dict], dict]) -> dict:
        from recbole.trainer import HyperTuning

        def objective(params: dict, _files) -> dict:
            key = json.dumps(params, sort_keys=True)
            if key not in entry["trials"]:
                result = train(model, {**config_dict, **params})
                entry["trials"][key] = {k: result[k] for k in (
                    "best_valid_score", "valid_score_bigger", "best_valid_result", "test_result")}
                self._save()
            return {**entry["trials"][key], "model": model}

        # hyperopt draws the trials from a generator seeded here: the same trials every time.
        previous = os.environ.get("HYPEROPT_FMIN_SEED")
        os.environ["HYPEROPT_FMIN_SEED"] = str(self.seed)
        try:
            search = HyperTuning(objective, params_file=space, algo="random",
                                 max_evals=self.budget, early_stop=self.budget)
            search.run()
        finally:
            if previous is None:
                del os.environ["HYPEROPT_FMIN_SEED"]
            else:
                os.environ["HYPEROPT_FMIN_SEED"] = previous
        return dict(search.best_params)

    def _save(self) -> None:
        with open(self.path + ".partial", "w", encoding="utf-8") as f:
            json.dump(self.store, f, indent=1, sort_keys=True, default=float)
        os.replace(self.path + ".partial", self.path)
