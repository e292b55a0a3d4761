"""Small charts for the dashboard, drawn on the server as SVG.

The admin must work offline, so there is no chart library to load: this module turns a
series into shapes with coordinates, and a template draws them as inline SVG.
"""

from dataclasses import dataclass
from datetime import date, datetime

WIDTH = 360
HEIGHT = 90
LEFT = 34  # room for the y axis labels
BOTTOM = 14  # room for the x axis labels
TOP = 6


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Line:
    points: str  # SVG polyline points, "x,y x,y ..."
    dots: list[tuple[float, float]]  # the same points, drawn as dots so a lone minute shows
    css_class: str
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    plot_bottom: float
    plot_right: float
    y_max_label: str
    x_first_label: str
    x_last_label: str
    bars: list[Bar]
    lines: list[Line]
    empty: bool

    @property
    def center_x(self) -> float:
        return (self.left + self.plot_right) / 2


def _scale(value: float, maximum: float) -> float:
    plot_height = HEIGHT - BOTTOM - TOP
    return TOP + plot_height - (value / maximum * plot_height if maximum else 0)


def _label(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def bar_chart(
    *, labels: list[datetime | date], values: list[int], unit: str, label_format: str = "%H:%M", width: int = WIDTH
) -> Chart:
    """One bar per minute (e.g. sagas completed), or per day with ``label_format="%Y-%m-%d"``."""
    maximum = max(values, default=0)
    plot_width = width - LEFT
    step = plot_width / max(len(values), 1)
    bars = []
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = _scale(value, maximum)
        bars.append(
            Bar(
                x=round(LEFT + index * step + 0.5, 2),
                y=round(y, 2),
                width=round(max(step - 1, 1), 2),
                height=round(HEIGHT - BOTTOM - y, 2),
                title=f"{label:{label_format}}: {value} {unit}",
            )
        )
    return Chart(
        width=width,
        height=HEIGHT,
        left=LEFT,
        plot_bottom=HEIGHT - BOTTOM,
        plot_right=width,
        y_max_label=_label(maximum),
        x_first_label=f"{labels[0]:{label_format}}" if labels else "",
        x_last_label=f"{labels[-1]:{label_format}}" if labels else "",
        bars=bars,
        lines=[],
        empty=maximum == 0,
    )


def line_chart(
    *,
    labels: list[datetime | date],
    series: dict[str, list[float | None]],
    label_format: str = "%H:%M",
    width: int = WIDTH,
) -> Chart:
    """A few lines over the same minutes (e.g. p50 and p95 durations); gaps where a minute had
    no value are bridged, since a missing minute means no saga finished then."""
    values = [value for points in series.values() for value in points if value is not None]
    maximum = max(values, default=0.0)
    plot_width = width - LEFT
    step = plot_width / max(len(labels) - 1, 1)
    lines = []
    for index, (name, points) in enumerate(series.items()):
        dots = [
            (round(LEFT + position * step, 1), round(_scale(value, maximum), 1))
            for position, value in enumerate(points)
            if value is not None
        ]
        lines.append(
            Line(
                points=" ".join(f"{x},{y}" for x, y in dots),
                dots=dots,
                css_class=f"series-{index}",
                label=name,
            )
        )
    return Chart(
        width=width,
        height=HEIGHT,
        left=LEFT,
        plot_bottom=HEIGHT - BOTTOM,
        plot_right=width,
        y_max_label=_label(maximum),
        x_first_label=f"{labels[0]:{label_format}}" if labels else "",
        x_last_label=f"{labels[-1]:{label_format}}" if labels else "",
        bars=[],
        lines=lines,
        empty=not values,
    )
