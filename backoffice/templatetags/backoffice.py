"""Number formats for the dashboard's tiles and tables."""

from django import template

register = template.Library()


@register.filter
def thousands(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


@register.filter
def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


@register.filter
def seconds(milliseconds: float | None) -> str:
    """A latency: whole milliseconds under a second, then seconds (two decimals under 10 s, one above)."""
    if milliseconds is None:
        return "-"
    if milliseconds < 1000:
        return f"{milliseconds:.0f} ms"
    value = milliseconds / 1000
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


@register.filter
def get(mapping: dict, key: str):
    return mapping.get(key, 0)
