"""What the training loop logs: averaged loss components, logit scales, problem counters."""

import torch
from scipy.stats import beta

__all__ = ["LOSS_NAMES", "LossWindow", "ProblemCounter", "logit_scales", "tracker_config"]

LOSS_NAMES = ("loss", "global_loss", "local_loss", "reconstruction_loss", "mlm_loss")


class LossWindow:
    """Sums of the loss components since the last log, averaged over steps and processes on `reduce`."""

    def __init__(self):
        self.sums = torch.zeros(len(LOSS_NAMES) + 1, dtype=torch.float64)  # the last entry counts micro-batches
        self.present = [False] * len(LOSS_NAMES)
        self.num_samples = 0

    def add(self, losses, num_samples: int) -> None:
        """`losses`: the model output (attributes) or a mapping of loss name -> scalar tensor."""
        for index, name in enumerate(LOSS_NAMES):
            value = losses.get(name) if isinstance(losses, dict) else getattr(losses, name, None)
            if value is not None:
                self.sums[index] += value.detach().double().cpu()
                self.present[index] = True
        self.sums[-1] += 1
        self.num_samples += num_samples

    def reduce(self, accelerator) -> dict[str, float]:
        """Collective: every process must call it."""
        totals = accelerator.reduce(self.sums.to(accelerator.device), reduction="sum").cpu()
        if totals[-1] == 0:
            return {}
        return {f"train/{name}": (totals[index] / totals[-1]).item()
                for index, name in enumerate(LOSS_NAMES) if self.present[index]}

    def samples(self, accelerator) -> int:
        return self.num_samples * accelerator.num_processes


class ProblemCounter:
    """Studies seen / skipped, views dropped, non-finite steps: totals over all processes, kept in the training state
    (so they survive a resume)."""

    KEYS = ("seen_studies", "skipped_studies", "dropped_views", "nonfinite_steps")
    # The skip limit is judged with a confidence bound, not the running fraction: the run stops when the studies seen
    # so far prove the skip rate above --max_skipped_fraction, i.e. when the lower end of the one-sided 99.9 %
    # Clopper-Pearson interval of the rate exceeds it. A dataset whose true rate lies under the limit is then (almost)
    # never stopped by sampling noise early in a run; one far above it stops after a few dozen studies.
    CONFIDENCE = 0.999

    def __init__(self, state: dict, max_skipped_fraction: float):
        self.state, self.max_skipped_fraction = state, max_skipped_fraction

    @classmethod
    def initial_state(cls) -> dict:
        return dict.fromkeys(cls.KEYS, 0)

    def add(self, accelerator, counters: dict, batch_size: int) -> None:
        skipped, dropped = int(counters["skipped_studies"]), int(counters["dropped_views"])
        local = torch.tensor([batch_size + skipped, skipped, dropped], dtype=torch.float64, device=accelerator.device)
        seen, skipped, dropped = accelerator.reduce(local, reduction="sum").tolist()
        self.state["seen_studies"] += int(seen)
        self.state["skipped_studies"] += int(skipped)
        self.state["dropped_views"] += int(dropped)

    def skip_rate_lower_bound(self) -> float:
        """The lower end of the one-sided `CONFIDENCE` Clopper-Pearson interval of the skip rate."""
        seen, skipped = self.state["seen_studies"], self.state["skipped_studies"]
        if skipped == 0:
            return 0.0
        return float(beta.ppf(1.0 - self.CONFIDENCE, skipped, seen - skipped + 1))

    def exceeded(self) -> bool:
        return self.skip_rate_lower_bound() > self.max_skipped_fraction

    def check(self) -> None:
        if self.exceeded():
            seen, skipped = self.state["seen_studies"], self.state["skipped_studies"]
            raise RuntimeError(
                f"{skipped} of {seen} studies ({100 * skipped / seen:.1f} %) could not be read: the skip rate is above "
                f"{self.skip_rate_lower_bound():.3f} with {self.CONFIDENCE:.1%} confidence, more than "
                f"--max_skipped_fraction {self.max_skipped_fraction}: see the warnings above for the files; fix the "
                "data or raise the threshold (the last checkpoint holds every finished step)"
            )

    def log_values(self) -> dict[str, int]:
        return {f"train/{key}": self.state[key] for key in self.KEYS[1:]}


def logit_scales(model) -> dict[str, float]:
    alta = model.alta
    values = {"train/logit_scale": alta.logit_scale.detach().exp().item()}
    for index, temperature in enumerate(alta.local_logit_scales.detach().exp().tolist(), start=1):
        values[f"train/local_temperature_{index}"] = temperature
    return values


def tracker_config(arguments: dict) -> dict:
    """Hyper-parameters in the scalar/str form trackers (TensorBoard hparams) accept."""
    return {key: value if isinstance(value, (int, float, str, bool)) else str(value) for key, value in arguments.items()}
