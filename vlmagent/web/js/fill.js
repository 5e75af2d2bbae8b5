// (j) -> {fields, target} after filling form j with plausible values by input type, or null when
// there is no such form; input/change events let the site's handlers run.
j => {
  const f = document.forms[j]; if (!f) return null;
  const fire = el => { for (const t of ['input', 'change'])
    el.dispatchEvent(new Event(t, {bubbles: true})); };
  const byType = {email: 'test@example.com', tel: '+15551234567', url: 'https://example.com/',
    date: '2024-05-17', 'datetime-local': '2024-05-17T12:00', time: '12:00', month: '2024-05',
    week: '2024-W20', color: '#336699', password: 'Passw0rd!23', search: 'test'};
  const radios = new Set(); let n = 0;
  for (const el of f.querySelectorAll('input,select,textarea')) {
    if (el.disabled || el.readOnly) continue;
    const tag = el.tagName.toLowerCase(), type = (el.getAttribute('type') || 'text').toLowerCase();
    if (tag === 'select') {
      const o = [...el.options].find(o => o.value && !o.disabled); if (!o) continue;
      el.value = o.value;
    } else if (tag === 'textarea') { el.value = 'Hello, this is a test message.';
    } else if (['hidden', 'submit', 'button', 'reset', 'image', 'file', 'range'].includes(type)) {
      continue;
    } else if (type === 'checkbox') { el.checked = true;
    } else if (type === 'radio') { if (radios.has(el.name)) continue; radios.add(el.name);
      el.checked = true;
    } else if (type === 'number') { const lo = parseFloat(el.min), hi = parseFloat(el.max);
      el.value = String(isNaN(lo) ? (isNaN(hi) ? 1 : Math.min(1, hi)) : lo);
    } else {
      const name = (el.name || el.id || '').toLowerCase();
      let v = byType[type] || (/mail/.test(name) ? 'test@example.com' : /name/.test(name)
        ? 'Alex Example' : /phone|tel/.test(name) ? '+15551234567' : 'Test input');
      if (el.maxLength > 0) v = v.slice(0, el.maxLength);
      el.value = v;
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
