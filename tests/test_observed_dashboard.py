"""The observe-mode page: upstream calls per tool, the small model's agreement, the saving."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from router.contracts import Agreement
from telemetry.models import UpstreamCall
from telemetry.observed import observed_get
from telemetry.selectors import window_get

pytestmark = pytest.mark.django_db


def upstream_call(tool: str, agreement: str, cost: str, slm_cost: str | None = None, **fields: Any) -> None:
    UpstreamCall.objects.create(
        source=UpstreamCall.Source.OBSERVED,
        content_sha256="x",
        messages=[{"role": "user", "content": "hi"}],
        answer={"role": "assistant", "content": "ok"},
        tool_name=tool,
        task_type="tool_use",
        cost_usd=Decimal(cost),
        agreement=agreement,
        slm_cost_usd=Decimal(slm_cost) if slm_cost is not None else None,
        **fields,
    )


def test_agreement_and_projected_saving_per_tool() -> None:
    for _ in range(3):
        upstream_call("get_order_details", Agreement.AGREES, "0.01", "0.0001")
    upstream_call("get_order_details", Agreement.OTHER_ARGUMENTS, "0.01", "0.0001")
    upstream_call("get_order_details", "", "0.01")  # not compared yet: counted, priced
    upstream_call("cancel_pending_order", Agreement.OTHER_TOOL, "0.02", "0.0001", would_hold=True)
    data = observed_get(window=window_get("7d"))
    lookup, cancel = data.rows
    assert (lookup.tool, lookup.calls, lookup.compared, lookup.agreeing) == ("get_order_details", 5, 4, 3)
    assert lookup.agreement_rate == 0.75
    # 3 of 4 compared agree: that share of the 5 calls' $0.05, less the small model's cost for it.
    assert lookup.projected_saving_usd == Decimal("0.75") * (Decimal("0.05") - Decimal("0.0001") * 5)
    assert (cancel.would_hold, cancel.projected_saving_usd) == (1, 0)
    assert data.calls == 6
    assert data.agreement_rate == 3 / 5


def test_the_page_shows_the_figures_to_reviewers(client: Client, reviewer: Any, outsider: Any) -> None:
    upstream_call("get_order_details", Agreement.AGREES, "0.01", "0.0001")
    client.force_login(outsider)
    assert client.get("/dashboard/observed/").status_code == 403
    client.force_login(reviewer)
    page = client.get("/dashboard/observed/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="tile-upstream-calls">1<' in html
    assert 'id="tile-agreement">100%<' in html
    assert "get_order_details" in html and "<svg" in html
    assert client.get("/dashboard/observed/?window=1y").status_code == 400
