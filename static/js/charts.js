// Charts for the portal. Data comes from <script type="application/json"> blocks that
// Django's json_script writes; money arrives as decimal strings, which Chart.js parses.
(function () {
  "use strict";
  const ink = "#17213a", brand = "#3355ff", over = "#c0263b", grid = "#e3e7ef";
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.color = "#5f6b85";

  function readJson(id) {
    const node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  function moneyTick(currency) {
    const format = new Intl.NumberFormat(undefined, {
      style: "currency", currency: currency, notation: "compact", maximumFractionDigits: 1,
    });
    return (value) => format.format(value);
  }

  function cumulativeChart(canvas) {
    const data = readJson(canvas.dataset.source);
    if (!data) return;
    new Chart(canvas, {
      type: "line",
      data: {
        labels: data.labels,
        datasets: [
          { label: "Plan (cumulative)", data: data.plan, borderColor: brand, backgroundColor: "rgba(51,85,255,.08)",
            borderDash: [6, 4], fill: true, tension: 0.25, pointRadius: 3 },
          { label: "Actual (cumulative)", data: data.actual, borderColor: over, backgroundColor: over,
            tension: 0.25, pointRadius: 4, borderWidth: 3, spanGaps: false },
        ],
      },
      options: {
        maintainAspectRatio: false, animation: false,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { position: "bottom", labels: { color: ink } } },
        scales: {
          y: { beginAtZero: true, grid: { color: grid }, ticks: { callback: moneyTick(canvas.dataset.currency) } },
          x: { grid: { display: false } },
        },
      },
    });
  }

  function sparkline(canvas) {
    const points = readJson(canvas.dataset.source) || [];
    const color = { over: over, at_risk: "#e89a1c", on_track: "#0f8a5f" }[canvas.dataset.status] || brand;
    new Chart(canvas, {
      type: "line",
      data: {
        labels: points.map((p) => p[0]),
        datasets: [{ data: points.map((p) => p[1]), borderColor: color, borderWidth: 2, pointRadius: 0,
                     fill: true, backgroundColor: color + "22", tension: 0.3 }],
      },
      options: {
        maintainAspectRatio: false, animation: false,
        plugins: { legend: { display: false }, tooltip: { enabled: false } },
        scales: { x: { display: false }, y: { display: false, beginAtZero: true } },
      },
    });
  }

  function dailyBars(canvas) {
    const points = readJson(canvas.dataset.source) || [];
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: points.map((p) => p[0]),
        datasets: [{ label: "Daily spend", data: points.map((p) => p[1]), backgroundColor: brand }],
      },
      options: {
        maintainAspectRatio: false, animation: false,
        plugins: { legend: { display: false } },
        scales: {
          y: { beginAtZero: true, grid: { color: grid }, ticks: { callback: moneyTick(canvas.dataset.currency) } },
          x: { grid: { display: false }, ticks: { maxTicksLimit: 12 } },
        },
      },
    });
  }

  // The cost explorer: one stacked series per group, the largest first, then "Other".
  const palette = [brand, "#22c3a6", "#e89a1c", "#8e5cf7", "#c0263b", "#0f8a5f", "#f25fa5", "#5f6b85", "#b8c0d4"];

  function stackedBars(canvas) {
    const data = readJson(canvas.dataset.source);
    if (!data) return;
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: data.series.map((series, index) => ({
          label: series.label, data: series.data, backgroundColor: palette[index % palette.length],
          stack: "spend", borderRadius: 2,
        })),
      },
      options: {
        maintainAspectRatio: false, animation: false,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { position: "bottom", labels: { color: ink, boxWidth: 12 } } },
        scales: {
          y: { stacked: true, beginAtZero: true, grid: { color: grid }, ticks: { callback: moneyTick(canvas.dataset.currency) } },
          x: { stacked: true, grid: { display: false }, ticks: { maxTicksLimit: 16 } },
        },
      },
    });
  }

  document.querySelectorAll("canvas[data-chart=cumulative]").forEach(cumulativeChart);
  document.querySelectorAll("canvas[data-chart=stacked]").forEach(stackedBars);
  document.querySelectorAll("canvas[data-chart=daily]").forEach(dailyBars);
  document.querySelectorAll("canvas[data-chart=spark]").forEach(sparkline);
})();
