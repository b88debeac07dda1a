from __future__ import annotations

import math

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views.generic import RedirectView
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, Throttled
from ninja.errors import ValidationError as NinjaValidationError

from reviewq import views
from reviewq.api import router as requests_router
from reviewq.errors import ApplicationError
from reviewq.openai_api import openai_api
from reviewq.review_api import router as review_router
from reviewq.untrusted import JSONParser
from telemetry import views as telemetry_views
from telemetry.api import router as traces_router

api = NinjaAPI(
    title="reviewq",
    version="1",
    description="SLM-first gateway for AI-agent actions.",
    docs_url="/docs",
    parser=JSONParser(),  # depth, NaN, NUL and lone surrogates checked for every JSON body
)
api.add_router("/", requests_router)
api.add_router("/review", review_router)
api.add_router("/traces", traces_router)


@api.exception_handler(ApplicationError)
def on_application_error(request: HttpRequest, exc: ApplicationError) -> HttpResponse:
    return api.create_response(request, exc.as_dict(), status=exc.status)


@api.exception_handler(NinjaValidationError)
def on_validation_error(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    first = exc.errors[0] if exc.errors else {}
    where = ".".join(str(part) for part in first.get("loc", ()))
    message = (
        f"{where}: {first.get('msg', 'invalid value')}" if where else first.get("msg", "invalid request")
    )
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors]
    return api.create_response(
        request, {"code": "invalid_request", "message": message, "errors": errors}, status=422
    )


@api.exception_handler(AuthenticationError)
def on_auth_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return api.create_response(
        request,
        {
            "code": "unauthorized",
            "message": "send a valid key as 'Authorization: Bearer <key>' (reviewer endpoints: log in)",
        },
        status=401,
    )


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if isinstance(exc.__cause__, ApplicationError):  # ninja wraps what the body parser raised
        return on_application_error(request, exc.__cause__)
    code = {400: "malformed_json", 429: "rate_limited"}.get(exc.status_code, "http_error")
    response = api.create_response(request, {"code": code, "message": str(exc)}, status=exc.status_code)
    if isinstance(exc, Throttled) and exc.wait:
        response["Retry-After"] = str(math.ceil(exc.wait))
    return response


urlpatterns = [
    path("", RedirectView.as_view(url="/review/", permanent=False)),
    path("api/v1/", api.urls),
    path("v1/", openai_api.urls),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("review/", views.queue, name="review_queue"),
    path("review/<int:item_id>/", views.item_detail, name="review_item"),
    path("review/<int:item_id>/approve", views.item_approve, name="review_approve"),
    path("review/<int:item_id>/deny", views.item_deny, name="review_deny"),
    path("review/<int:item_id>/edit", views.item_edit, name="review_edit"),
    path("review/<int:item_id>/claim", views.item_claim, name="review_claim"),
    path("healthz", views.healthz, name="healthz"),
    path("dashboard/", include("telemetry.urls")),
    path("metrics", telemetry_views.metrics, name="metrics"),
]
