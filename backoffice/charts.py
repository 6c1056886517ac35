"""The dashboard's charts: SVG drawn on the server by pygal and inlined in the page, so they need no
JavaScript and nothing from a CDN. Every bar and point carries its number in an SVG <title> (the browser
shows it on hover, screen readers read it), and the page puts a table of the same numbers beside each chart.

pygal's tooltips need its JavaScript from a CDN: `js=[]` leaves it out, and `_clean` drops the inline
<script> of chart settings that only that JavaScript reads.
"""

import re
from dataclasses import dataclass, field
from datetime import date

import pygal
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from pygal.style import Style

from backoffice.dashboard import Dashboard
from conversations.failures import ANSWERED_COLOUR, CAUSES, FAILED_COLOUR

CREDITS_COLOUR = "#5b8a3c"


@dataclass
class Chart:
    svg: SafeString
    legend: list[tuple[str, str]] = field(default_factory=list)  # (label, colour), as drawn


_FONT = '"Segoe UI", system-ui, Roboto, "Helvetica Neue", Arial, sans-serif'  # the admin's own font stack
# The viewBox, about the size the chart is shown at on a 1400 px screen (half the page; the whole page for a
# wide one), so its text is drawn near the sizes below: the SVG scales to its box's width.
_WIDTH, _HEIGHT = 640, 300
_WIDE_WIDTH = 1300


def _style(*colours: str) -> Style:
    # CSS variables of the admin's theme, so the charts follow its light and dark modes.
    return Style(
        background="transparent",
        plot_background="transparent",
        foreground="var(--body-fg, #333)",
        foreground_strong="var(--body-fg, #333)",
        foreground_subtle="var(--hairline-color, #ccc)",
        guide_stroke_color="var(--hairline-color, #ccc)",
        major_guide_stroke_color="var(--border-color, #999)",
        font_family=_FONT,
        label_font_size=13,
        major_label_font_size=13,
        legend_font_size=14,
        value_font_size=13,
        no_data_font_size=20,
        opacity=".9",
        opacity_hover="1",
        colors=colours or (ANSWERED_COLOUR,),
    )


def _config(**options) -> dict:
    return {
        "js": [],
        "disable_xml_declaration": True,
        "width": _WIDTH,
        "height": _HEIGHT,
        # The legend is the page's (a list beside the chart, in text): pygal's is small print under the axis.
        "show_legend": False,
        "margin": 8,
        "spacing": 10,
        "truncate_legend": -1,
        "truncate_label": -1,
        "no_data_text": "No messages in this range",
        **options,
    }


def _day_label(day: date) -> str:
    return day.strftime("%b %d")


def _day_axis(dashboard: Dashboard) -> dict:
    labels = [_day_label(day.day) for day in dashboard.days]
    every = max(1, round(len(labels) / 10))  # about ten labels on the axis, whatever the range
    return {"x_labels": labels, "x_labels_major_every": every, "show_minor_x_labels": every == 1}


def _counts_axis(largest: int) -> dict:
    """Whole numbers on a count's axis: below ten pygal would label 0.1, 0.2, ... messages."""
    return {"y_labels": list(range(0, max(largest, 1) + 1))} if largest < 10 else {}


def _clean(svg: str, title: str) -> SafeString:
    svg = re.sub(r"<script\b[^>]*>.*?</script>", "", svg, flags=re.S)
    svg = svg.replace("<title>Pygal</title>", f"<title>{escape(title)}</title>", 1)
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{escape(title)}" ', 1)
    return mark_safe(svg)


def messages_chart(dashboard: Dashboard) -> Chart:
    """Messages per day, stacked: answered, then each failure cause seen in the range."""
    series = [("answered", ANSWERED_COLOUR), *((f"failed: {cause.label}", cause.colour) for cause in dashboard.causes)]
    chart = pygal.StackedBar(
        **_config(
            style=_style(*(colour for _, colour in series)),
            width=_WIDE_WIDTH,
            height=320,
            **_day_axis(dashboard),
            **_counts_axis(max((day.messages for day in dashboard.days), default=0)),
        )
    )
    chart.add(
        "answered",
        [{"value": day.answered, "tooltip": f"{day.day}: answered {day.answered}"} for day in dashboard.days],
    )
    for cause in dashboard.causes:
        chart.add(
            f"failed: {cause.label}",
            [
                {
                    "value": day.failed.get(cause.key, 0),
                    "tooltip": f"{day.day}: failed ({cause.label}) {day.failed.get(cause.key, 0)}",
                }
                for day in dashboard.days
            ],
        )
    return Chart(_clean(chart.render(is_unicode=True), "Messages per day, answered and failed"), series)


def credits_chart(dashboard: Dashboard) -> Chart:
    chart = pygal.Bar(
        **_config(
            style=_style(CREDITS_COLOUR),
            **_day_axis(dashboard),
            **_counts_axis(max((day.credits for day in dashboard.days), default=0)),
        )
    )
    chart.add(
        "credits",
        [{"value": day.credits, "tooltip": f"{day.day}: {day.credits} credits"} for day in dashboard.days],
    )
    return Chart(_clean(chart.render(is_unicode=True), "Credits spent per day"))


_LOG_STEPS = [scale * step for scale in (0.001, 0.01, 0.1, 1, 10) for step in (1, 2, 5)] + [100]


def latency_chart(dashboard: Dashboard) -> Chart:
    """The agent's p50 and p95 latency per day, in seconds; a day without answers leaves a gap."""
    series = [("p50", ANSWERED_COLOUR), ("p95", FAILED_COLOUR)]
    chart = pygal.Line(
        **_config(
            style=_style(*(colour for _, colour in series)),
            dots_size=3,
            allow_interruptions=True,
            # Logarithmic: a built-in agent's milliseconds and a hosted model's seconds on one chart.
            logarithmic=True,
            margin_right=28,  # the last day's label is centred on the right edge
            **_day_axis(dashboard),
        )
    )
    values = [
        milliseconds / 1000
        for day in dashboard.days
        for milliseconds in (day.p50_ms, day.p95_ms)
        if milliseconds is not None
    ]
    if values:
        # 1-2-5 steps between the lowest and highest value: pygal's own logarithmic labels pile up.
        low, high = min(values), max(values)
        chart.y_labels = [step for step in _LOG_STEPS if low / 2.5 <= step <= high * 2.5]
    for name, _ in series:
        points: list[dict[str, object] | None] = []
        for day in dashboard.days:
            milliseconds = day.p50_ms if name == "p50" else day.p95_ms
            if milliseconds is None:
                points.append(None)
            else:
                seconds = round(milliseconds / 1000, 3)
                points.append({"value": seconds, "tooltip": f"{day.day}: {name} {seconds:.3f} s"})
        chart.add(name, points)
    chart.value_formatter = lambda seconds: f"{seconds:g} s"
    return Chart(_clean(chart.render(is_unicode=True), "Agent latency per day, p50 and p95 (seconds)"), series)


def failures_chart(dashboard: Dashboard) -> Chart:
    """Failures in the range by error code, coloured by cause, most first."""
    failures = list(reversed(dashboard.failures))  # pygal draws the first label at the bottom
    chart = pygal.HorizontalBar(
        **_config(
            style=_style(*(cause.colour for cause in CAUSES)),
            height=max(120, 40 + 34 * len(failures)),
            x_labels=[item.code for item in failures],
            **_counts_axis(max((item.messages for item in failures), default=0)),
        )
    )
    chart.add(
        "failed",
        [
            {
                "value": item.messages,
                "color": item.cause.colour,
                "tooltip": f"{item.code} ({item.cause.label}): {item.messages}",
            }
            for item in failures
        ],
    )
    return Chart(_clean(chart.render(is_unicode=True), "Failures by error code"))


def channels_chart(dashboard: Dashboard) -> Chart:
    """The busiest channels in the range: answered and failed messages, busiest on top."""
    series = [("answered", ANSWERED_COLOUR), ("failed", FAILED_COLOUR)]
    channels = list(reversed(dashboard.channels))
    chart = pygal.HorizontalStackedBar(
        **_config(
            style=_style(*(colour for _, colour in series)),
            height=max(120, 50 + 34 * len(channels)),
            x_labels=[f"{item.name} ({item.workspace_name})" for item in channels],
            **_counts_axis(max((item.messages for item in channels), default=0)),
        )
    )
    chart.add(
        "answered",
        [
            {"value": item.messages - item.failed, "tooltip": f"{item.name}: answered {item.messages - item.failed}"}
            for item in channels
        ],
    )
    chart.add("failed", [{"value": item.failed, "tooltip": f"{item.name}: failed {item.failed}"} for item in channels])
    return Chart(_clean(chart.render(is_unicode=True), "Busiest channels"), series)
