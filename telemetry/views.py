"""The dashboard and the Prometheus endpoint. The figures come from selectors and metrics."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from prometheus_client import CONTENT_TYPE_LATEST

from reviewq.permissions import is_reviewer
from router.models import Adapter
from telemetry import charts, clusters, observed, selectors
from telemetry import metrics as prometheus
from telemetry.models import TaskCluster


def _refuse_outsiders(request: HttpRequest) -> None:
    # A logged-in outsider gets a plain refusal, not a loop back to the login page.
    if not is_reviewer(request.user):
        raise PermissionDenied("the dashboard is for reviewers and staff")


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    _refuse_outsiders(request)
    try:
        window = selectors.window_get(request.GET.get("window"))
    except selectors.UnknownWindow as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain")
    data = selectors.dashboard_get(window=window)
    context = {"data": data, "charts": charts.dashboard_charts(data), "windows": list(selectors.WINDOWS)}
    return render(request, "telemetry/dashboard.html", context)


@login_required
def learning_dashboard(request: HttpRequest) -> HttpResponse:
    """The learning loop's page: the task clusters, the adapters, and each adapter generation's
    escalation rate, auto-release rate and first-proposal accuracy."""
    _refuse_outsiders(request)
    context = {
        "clusters": TaskCluster.objects.all()[:200],
        "generations": clusters.generations(),
        "adapters": Adapter.objects.select_related("base")[:50],
    }
    return render(request, "telemetry/learning.html", context)


@login_required
def observed_dashboard(request: HttpRequest) -> HttpResponse:
    """Observe mode's page: the upstream LLM's calls, the small model's agreement, the saving."""
    _refuse_outsiders(request)
    try:
        window = selectors.window_get(request.GET.get("window") or "7d")
    except selectors.UnknownWindow as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain")
    data = observed.observed_get(window=window)
    context = {"data": data, "charts": charts.observed_charts(data), "windows": list(selectors.WINDOWS)}
    return render(request, "telemetry/observed.html", context)


def metrics(request: HttpRequest) -> HttpResponse:
    if not prometheus.scrape_allowed(request):
        return HttpResponse(
            "metrics are served to loopback, to staff, or with 'Authorization: Bearer <METRICS_TOKEN>'\n",
            status=403,
            content_type="text/plain",
        )
    return HttpResponse(prometheus.exposition(), content_type=CONTENT_TYPE_LATEST)
