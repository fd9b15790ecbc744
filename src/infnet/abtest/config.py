"""The A/B test's settings: the platform's size, the arms and their models, the ranking
formula, the nightly updates."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from infnet.config import Strict

# the arm models: the best INFNet of the variants suite (as the demo), others as registered
OPTIONS: dict[str, dict[str, Any]] = {
    "infnet": {"preset": "v2", "time_aware": True, "candidate_hub": True, "wide_heads": True}
}


class ABConfig(Strict):
    days: int = Field(default=30, ge=1)
    users: int = Field(default=2500, ge=100)
    items: int = Field(default=2000, ge=100)
    warmup_days: int = Field(default=7, ge=2)
    candidates: int = Field(default=50, ge=2)
    slate: int = Field(default=8, ge=1)
    control: str = "production"
    treatment: str = "infnet"
    treatment_share: float = Field(default=0.5, gt=0, lt=1)
    num_buckets: int = Field(default=100, ge=2)
    aa: bool = False  # both arms serve the control model, no updates
    updates: bool = True  # the streaming loop updates each arm's model nightly
    # eCPM (pCTR x bid) plus the organic value of engagement; bid is 0 for organic items
    formula: str = "is_click * bid + 0.3 * is_click + 0.3 * long_view + 0.3 * is_like"
    conversion: bool = False
    epochs: int = Field(default=2, ge=1)
    max_len: int = Field(default=20, ge=1)
    label_delay_s: float = Field(default=300.0, ge=0)  # mean delay of a label callback
    online_lr: float | None = None  # default: the run's lr
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> ABConfig:
        from infnet.models import available_models

        for which in ("control", "treatment"):
            name = getattr(self, which)
            if name not in available_models():
                raise ValueError(
                    f"{which}: unknown model {name!r} (models: {', '.join(available_models())})"
                )
        if self.slate > self.candidates:
            raise ValueError(f"slate ({self.slate}) must not exceed candidates ({self.candidates})")
        cut = round(self.treatment_share * self.num_buckets)
        if not 0 < cut < self.num_buckets:
            raise ValueError(
                f"treatment_share {self.treatment_share} of {self.num_buckets} buckets leaves an "
                "arm without buckets"
            )
        return self

    def arms(self) -> dict[str, tuple[str, tuple[int, int]]]:
        """arm -> (model, buckets [start, end))."""
        cut = round(self.treatment_share * self.num_buckets)
        treatment = self.control if self.aa else self.treatment
        return {"control": (self.control, (0, self.num_buckets - cut)),
                "treatment": (treatment, (self.num_buckets - cut, self.num_buckets))}  # fmt: skip
