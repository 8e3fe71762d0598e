#!/usr/bin/env python3
"""Renders a compare.sh table (markdown) as an SVG bar chart: requests/s and CPU µs per
request for each row, side by side, with nginx's values as the reference line.

    loadtest/chart.py loadtest/results/compare-20261123-120000.md > chart.svg
"""
import html
import sys


def rows(markdown):
    """(name, req/s, CPU µs/req) for every table row with numbers."""
    header = None
    for line in markdown.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if header is None:
            header = cells
            continue
        record = dict(zip(header, cells))
        try:
            yield record["name"], float(record["req/s"]), float(record["CPU µs/req"])
        except (KeyError, ValueError):
            continue


def panel(x0, title, values, unit, reference, width=360, bar_h=22, gap=8):
    top = max(v for _, v in values) or 1
    out = [f'<text x="{x0}" y="20" font-weight="bold">{html.escape(title)}</text>']
    for i, (name, value) in enumerate(values):
        y = 34 + i * (bar_h + gap)
        w = max(1, value / top * (width - 150))
        colour = "#d9822b" if name.startswith("portcullis") else "#5b7ea4"
        out.append(f'<text x="{x0}" y="{y + 15}" font-size="12">{html.escape(name)}</text>')
        out.append(f'<rect x="{x0 + 120}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"/>')
        out.append(
            f'<text x="{x0 + 124 + w:.1f}" y="{y + 15}" font-size="11">{value:,.1f} {unit}</text>'
        )
    if reference:
        rx = x0 + 120 + reference / top * (width - 150)
        height = 34 + len(values) * (bar_h + gap)
        out.append(
            f'<line x1="{rx:.1f}" y1="28" x2="{rx:.1f}" y2="{height}" stroke="#333" '
            'stroke-dasharray="4 3"/>'
        )
    return out


def main():
    data = list(rows(open(sys.argv[1], encoding="utf-8").read()))
    if not data:
        sys.exit(f"{sys.argv[1]}: no table rows with numbers")
    nginx = next(((rps, cpu) for name, rps, cpu in data if name == "nginx"), (None, None))
    height = 60 + len(data) * 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="880" height="{height}" '
        'font-family="sans-serif" font-size="13">',
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    parts += panel(10, "requests/s (higher is better)", [(n, r) for n, r, _ in data], "", nginx[0])
    parts += panel(450, "CPU µs per request (lower is better)", [(n, c) for n, _, c in data], "µs", nginx[1])
    parts.append(
        f'<text x="10" y="{height - 8}" font-size="11" fill="#555">dashed: nginx; '
        "from loadtest/compare.sh, one run, proxies pinned to one core</text>"
    )
    parts.append("</svg>")
    print("\n".join(parts))


if __name__ == "__main__":
    main()
