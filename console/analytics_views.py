"""The console's analytics page: charts of the analytics read model (analytics.selectors), and
the stream consumer's lag. Everything is read from the analytics tables, never from the
contexts' own: it shows what the stream said, as an outside consumer would see it."""

from datetime import timedelta

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from analytics import selectors
from console.charts import bar_chart, line_chart

DAYS_CHOICES = (30, 90, 365)
WIDTH = 720
VIEW_PERMISSION = "sagas.view_sagainstance"


def analytics_view(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm(VIEW_PERMISSION):
        raise PermissionDenied
    try:
        days = int(request.GET.get("days", 90))
    except ValueError:
        days = 90
    days = days if days in DAYS_CHOICES else 90
    since = selectors.chart_since(days)
    labels = [since + timedelta(days=offset) for offset in range(days)]
    sales = selectors.sales_per_day(since=since)
    currencies = sorted({row["currency"] for row in sales if row["currency"] != "XXX"}) or ["EUR"]
    currency = request.GET.get("currency") if request.GET.get("currency") in currencies else currencies[0]
    by_day: dict = {}
    placed: dict = {}
    for row in sales:
        placed[row["day"]] = placed.get(row["day"], 0) + row["orders_placed"]
        if row["currency"] == currency:
            by_day[row["day"]] = row
    fulfilment = {row["day"]: row for row in selectors.fulfilment_per_day(since=since)}
    reasons = selectors.cancellations_by_reason(since=since)
    totals = {
        "placed": sum(placed.values()),
        "confirmed": sum(row["orders_confirmed"] for row in sales),
        "cancelled": sum(row["orders_cancelled"] for row in sales),
        "net_amount": sum(row["net_amount"] for row in by_day.values()),
        "refunds": sum(row["refunds"] for row in by_day.values()),
        "refunded_amount": sum(row["refunded_amount"] for row in by_day.values()),
    }
    finished = totals["confirmed"] + totals["cancelled"]
    day_format = "%Y-%m-%d"
    context = {
        **admin.site.each_context(request),
        "title": "Analytics",
        "days": days,
        "days_choices": DAYS_CHOICES,
        "currency": currency,
        "currencies": currencies,
        "totals": totals,
        "compensation_rate": totals["cancelled"] / finished if finished else None,
        "reasons": list(reasons.items()),
        "reason_max": max(reasons.values(), default=0),
        "lag": selectors.consumer_lag(),
        "generation": selectors.active_generation(),
        "generated_at": timezone.now(),
        "revenue_chart": bar_chart(
            labels=labels,
            values=[by_day[day]["net_amount"] // 100 if day in by_day else 0 for day in labels],
            unit=f"{currency} net",
            label_format=day_format,
            width=WIDTH,
        ),
        "orders_chart": bar_chart(
            labels=labels,
            values=[placed.get(day, 0) for day in labels],
            unit="orders placed",
            label_format=day_format,
            width=WIDTH,
        ),
        "fulfilment_chart": line_chart(
            labels=labels,
            series={
                "p50": [fulfilment[day]["p50"] if day in fulfilment else None for day in labels],
                "p95": [fulfilment[day]["p95"] if day in fulfilment else None for day in labels],
            },
            label_format=day_format,
            width=WIDTH,
        ),
    }
    return TemplateResponse(request, "admin/analytics/charts.html", context)
