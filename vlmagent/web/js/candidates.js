// (max) -> descriptions of up to `max` visible clickables outside forms (forms are driven
// separately); the elements, their descriptions and how to find them again are stored on
// window.__vlm for click_target.js.
max => {
  const describe = el => {
    let s = el.tagName.toLowerCase();
    const cls = typeof el.className === 'string' ? el.className.trim().split(/\s+/)[0] : '';
    if (el.id) s += '#' + el.id; else if (cls) s += '.' + cls;
    const t = (el.innerText || el.value || el.getAttribute('aria-label') || '')
      .trim().replace(/\s+/g, ' ').slice(0, 40);
    return t ? s + " '" + t + "'" : s;
  };
  const sel = 'button,[role=button],input[type=button],input[type=submit],[onclick],a[href^="#"]';
  const collect = limit => {
    const out = [];
    for (const el of document.querySelectorAll(sel)) {
      if (out.length >= limit) break;
      if (el.closest('form') || el.disabled) continue;
      const r = el.getBoundingClientRect(), cs = getComputedStyle(el);
      if (r.width < 1 || r.height < 1 || cs.visibility === 'hidden') continue;
      out.push(el);
    }
    return out;
  };
  const out = collect(max);
  if (window.__vlm) Object.assign(window.__vlm, {targets: out, descs: out.map(describe),
                                                  collect, describe});
  return out.map(describe);
}
