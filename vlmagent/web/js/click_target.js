// (i) -> the i-th element stored by candidates.js, or null. Frameworks (Vue, Alpine, React)
// often replace their nodes after a click: a detached target is found again as the visible
// clickable with the same description.
i => {
  const v = window.__vlm;
  const el = v && v.targets[i];
  if (!el || el.isConnected) return el || null;
  return v.collect(1000).find(e => v.describe(e) === v.descs[i]) || null;
}
