"""Can agents reach each other and escalate through agent-mail?"""

from __future__ import annotations

import pytest

from pytest_maf import health
from pytest_maf.config import Settings
from pytest_maf.health import require


@pytest.mark.maf_check(id="mail.root-writable", severity="critical", tags=["agent-mail"])
def test_mail_root_is_writable(maf_settings: Settings) -> None:
    require(health.mail_root_writable(maf_settings.mail_root))


@pytest.mark.maf_check(id="mail.root-initialised", severity="warning", tags=["agent-mail"])
def test_mail_root_is_laid_out(maf_settings: Settings) -> None:
    require(health.mail_root_initialised(maf_settings.mail_root))


@pytest.mark.maf_check(id="mail.escalation-inboxes", severity="critical", tags=["agent-mail", "escalation"])
def test_escalation_inboxes_can_be_created(maf_settings: Settings) -> None:
    require(health.escalation_inboxes_creatable(maf_settings.mail_root, maf_settings.escalation_targets))
