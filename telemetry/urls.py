from __future__ import annotations

from django.urls import path

from telemetry import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("observed/", views.observed_dashboard, name="observed_dashboard"),
    path("learning/", views.learning_dashboard, name="learning_dashboard"),
]
