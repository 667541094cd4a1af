"""The lab profiles a service serves, loaded once at start and checked against its models."""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from service.engine.errors import ModelContractError
from service.engine.lab_profile import PROFILE_JSON, LabProfile, scan_labs

log = logging.getLogger(__name__)


class UnknownLab(LookupError):
    """A lab id with no profile; the message names the labs there are."""


@dataclass(frozen=True)
class LabRegistry:
    """Profiles by lab id, and the default lab of each API-key user."""

    profiles: dict[str, LabProfile]
    key_labs: dict[str, str]

    @property
    def ids(self) -> list[str]:
        return sorted(self.profiles)

    def get(self, lab_id: str) -> LabProfile:
        """The profile of ``lab_id``.

        Raises:
            UnknownLab: no such lab (the message lists the labs).
        """
        found = self.profiles.get(lab_id)
        if found is None:
            served = ", ".join(self.ids) or "none (python -m training lab-profile makes one)"
            raise UnknownLab(f"no lab {lab_id!r}; the labs with a profile are: {served}")
        return found

    def for_user(self, user: str | None) -> str | None:
        """The default lab of an API key's user, if one is set."""
        return self.key_labs.get(user) if user else None


def load_labs(root: Path, model_ids: Collection[str], key_labs: dict[str, str]) -> LabRegistry:
    """Every profile under ``root``, each checked to validate a served model, and each user's default lab checked
    to exist.

    Raises:
        ModelContractError: an unreadable profile, one for a model that is not served, or a user's default lab
            without a profile (one line naming the file or the setting).
    """
    profiles = scan_labs(root)
    for lab_id, profile in profiles.items():
        if profile.model_id not in model_ids:
            raise ModelContractError(
                f"{root / lab_id / PROFILE_JSON}: validated model {profile.model_id}, which is not served (models: "
                f"{', '.join(sorted(model_ids))}); make the profile again for a served model or remove it"
            )
    for user, lab_id in key_labs.items():
        if lab_id not in profiles:
            raise ModelContractError(
                f"TBSEG_KEY_LABS names lab {lab_id!r} for {user}, which has no profile in {root} "
                f"(labs: {', '.join(sorted(profiles)) or 'none'})"
            )
    if profiles:
        log.info("labs: %s", ", ".join(f"{p.lab_id} v{p.version} ({p.model_id})" for p in profiles.values()))
    return LabRegistry(profiles, key_labs)
