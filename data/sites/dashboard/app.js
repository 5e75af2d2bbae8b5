// Renders the dashboard: metric cards, a line chart on <canvas>, and an alert list.
(function () {
  const data = window.GREENHOUSE;
  const app = document.getElementById("app");
  let current = "temperature";

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
    children.forEach((c) => node.append(c));
    return node;
  }

  function latest(s) { return s.values[s.values.length - 1]; }
  function inRange(s) { const v = latest(s); return v >= s.target[0] && v <= s.target[1]; }

  function header() {
    return el("header", { class: "bar" },
      el("h1", {}, `${data.name} · climate`),
      el("span", { class: "updated" }, `Updated ${data.updated}`));
  }

  function cards() {
    const wrap = el("section", { class: "cards" });
    Object.entries(data.series).forEach(([key, s]) => {
      const card = el("button", { class: "card", type: "button", "data-key": key,
                                  "aria-pressed": String(key === current) },
        el("span", { class: "label" }, s.label),
        el("strong", { class: "value" }, `${latest(s)} ${s.unit}`),
        el("span", { class: inRange(s) ? "pill ok" : "pill warn" },
           inRange(s) ? "in range" : "check"));
      card.style.setProperty("--c", s.color);
      card.addEventListener("click", () => { current = key; render(); });
      wrap.append(card);
    });
    return wrap;
  }

  function chart() {
    const s = data.series[current];
    const box = el("section", { class: "panel" },
      el("h2", {}, `${s.label} this week (${s.unit})`));
    const canvas = el("canvas", { width: "720", height: "260", id: "chart",
                                  "aria-label": `${s.label} chart` });
    box.append(canvas);
    draw(canvas, s);
    return box;
  }

  function draw(canvas, s) {
    const ctx = canvas.getContext("2d");
    const W = canvas.width, H = canvas.height, pad = 36;
    const lo = Math.min(s.target[0], ...s.values), hi = Math.max(s.target[1], ...s.values);
    const x = (i) => pad + (i * (W - 2 * pad)) / (s.values.length - 1);
    const y = (v) => H - pad - ((v - lo) / (hi - lo || 1)) * (H - 2 * pad);
    ctx.clearRect(0, 0, W, H);
    ctx.fillStyle = "rgba(90, 158, 111, 0.12)";  // target band
    ctx.fillRect(pad, y(s.target[1]), W - 2 * pad, y(s.target[0]) - y(s.target[1]));
    ctx.strokeStyle = "#d5dae1"; ctx.lineWidth = 1;
    ctx.font = "12px 'DejaVu Sans', sans-serif"; ctx.fillStyle = "#6b7280";
    data.days.forEach((d, i) => {
      ctx.beginPath(); ctx.moveTo(x(i), pad / 2); ctx.lineTo(x(i), H - pad); ctx.stroke();
      ctx.fillText(d, x(i) - 12, H - 12);
    });
    ctx.strokeStyle = s.color; ctx.lineWidth = 3; ctx.beginPath();
    s.values.forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
    ctx.stroke();
    ctx.fillStyle = s.color;
    s.values.forEach((v, i) => { ctx.beginPath(); ctx.arc(x(i), y(v), 4, 0, 2 * Math.PI); ctx.fill(); });
  }

  function alerts() {
    const list = el("ul", { class: "alerts" });
    data.alerts.forEach((a) =>
      list.append(el("li", { class: a.level }, el("b", {}, a.day), ` ${a.text}`)));
    return el("section", { class: "panel" }, el("h2", {}, "Alerts"), list);
  }

  function render() {
    app.replaceChildren(header(), cards(), chart(), alerts());
  }

  render();
})();
