// (j) -> {fields, target} after filling form j with plausible values by input type, or null when
// there is no such form; input/change events let the site's handlers run.
j => {
  const f = document.forms[j]; if (!f) return null;
  const fire = el => { for (const t of ['input', 'change'])
    el.dispatchEvent(new Event(t, {bubbles: true})); };
  // Through the prototype's setter: React keeps its own copy of an input's value and ignores
  // `el.value = v` from outside, so its onChange would never see the fill. Boxes are clicked,
  // which is what React listens to for them.
  const set = (el, v) => {
    const d = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(el), 'value');
    if (d && d.set) d.set.call(el, v); else el.value = v;
  };
  const tick = el => { if (!el.checked) el.click(); if (!el.checked) el.checked = true; };
  const byType = {email: 'test@example.com', tel: '+15551234567', url: 'https://example.com/',
    date: '2024-05-17', 'datetime-local': '2024-05-17T12:00', time: '12:00', month: '2024-05',
    week: '2024-W20', color: '#336699', password: 'Passw0rd!23', search: 'test'};
  const radios = new Set(); let n = 0;
  for (const el of f.querySelectorAll('input,select,textarea')) {
    if (el.disabled || el.readOnly) continue;
    const tag = el.tagName.toLowerCase(), type = (el.getAttribute('type') || 'text').toLowerCase();
    if (tag === 'select') {
      const o = [...el.options].find(o => o.value && !o.disabled); if (!o) continue;
      set(el, o.value);
    } else if (tag === 'textarea') { set(el, 'Hello, this is a test message.');
    } else if (['hidden', 'submit', 'button', 'reset', 'image', 'file', 'range'].includes(type)) {
      continue;
    } else if (type === 'checkbox') { tick(el);
    } else if (type === 'radio') { if (radios.has(el.name)) continue; radios.add(el.name);
      tick(el);
    } else if (type === 'number') { const lo = parseFloat(el.min), hi = parseFloat(el.max);
      set(el, String(isNaN(lo) ? (isNaN(hi) ? 1 : Math.min(1, hi)) : lo));
    } else {
      const name = (el.name || el.id || '').toLowerCase();
      let v = byType[type] || (/mail/.test(name) ? 'test@example.com' : /name/.test(name)
        ? 'Alex Example' : /phone|tel/.test(name) ? '+15551234567' : 'Test input');
      if (el.maxLength > 0) v = v.slice(0, el.maxLength);
      set(el, v);
    }
    fire(el); n++;
  }
  const btn = f.querySelector('button:not([type]),button[type=submit],input[type=submit]');
  const cls = typeof f.className === 'string' ? f.className.trim().split(/\s+/)[0] : '';
  const label = btn ? (btn.innerText || btn.value || '').trim().replace(/\s+/g, ' ')
    .slice(0, 40) : '';
  const name = 'form' + (f.id ? '#' + f.id : cls ? '.' + cls : '');
  return {fields: n, target: label ? name + " '" + label + "'" : name};
}
