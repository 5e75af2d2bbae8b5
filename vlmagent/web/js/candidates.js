// (max) -> descriptions of up to `max` visible clickables outside forms (forms are driven
// separately); the elements are stored on window.__vlm.targets for click_target.js.
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
  const out = [];
  for (const el of document.querySelectorAll(sel)) {
    if (out.length >= max) break;
    if (el.closest('form') || el.disabled) continue;
    const r = el.getBoundingClientRect(), cs = getComputedStyle(el);
    if (r.width < 1 || r.height < 1 || cs.visibility === 'hidden') continue;
    out.push(el);
  }
  if (window.__vlm) window.__vlm.targets = out;
  return out.map(describe);
}
