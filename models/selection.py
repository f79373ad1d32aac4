"""Which model estimates a node's power (docs/architecture.md, 'Algorithms'): per zone, the
best model whose selector matches the node and whose features the node measures.

"Best" = most specific selector (cpu model and core count both matched beats one beats none),
then the lower holdout error, then the id (so the choice is deterministic). The set is keyed
by model id: a newer record of an id replaces the old one (the models topic is compacted by
selector/id), a tombstone removes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from joulestream.models.artifact import PowerModel


@dataclass(frozen=True)
class NodeFacts:
    cpu_model: str | None = None
    cores: int | None = None


def matches(model: PowerModel, node: NodeFacts) -> bool:
    if model.cpu_model is not None and model.cpu_model != node.cpu_model:
        return False
    return model.cores is None or model.cores == node.cores


def specificity(model: PowerModel) -> int:
    return (model.cpu_model is not None) + (model.cores is not None)


@dataclass(frozen=True)
class ModelSet:
    """An immutable snapshot; updates return a new set, so a reader never sees half a change."""

    models: Mapping[str, PowerModel] = field(default_factory=dict)

    @classmethod
    def of(cls, models: Iterable[PowerModel]) -> ModelSet:
        return cls({m.id: m for m in models})

    def with_model(self, model: PowerModel) -> ModelSet:
        return ModelSet({**self.models, model.id: model})

    def without(self, model_id: str) -> ModelSet:
        return ModelSet({k: v for k, v in self.models.items() if k != model_id})

    def select(self, node: NodeFacts, present: Iterable[str]) -> dict[str, PowerModel]:
        """Zone → best applicable model; zones nobody models are absent."""
        available = set(present)
        best: dict[str, PowerModel] = {}
        for model in self.models.values():
            if not matches(model, node) or not available.issuperset(model.features):
                continue
            current = best.get(model.zone)
            if current is None or _rank(model) < _rank(current):
                best[model.zone] = model
        return dict(sorted(best.items()))


def _rank(model: PowerModel) -> tuple[int, float, float, str]:
    return (-specificity(model), *model.error_rank(), model.id)
