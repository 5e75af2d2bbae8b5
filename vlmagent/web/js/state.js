// () -> [mutations, document token, dialogs, popups, effects, navigations started]. The document
// token changes when the page navigated; the dialog/popup counters are reset on read so repeated
// reads of one document add up.
() => { const s = window.__vlm; if (!s) return [0, -1, 0, 0, 0, 0];
  const r = [s.muts, s.doc, s.dialogs, s.popups, s.effects, s.leaving]; s.dialogs = 0;
  s.popups = 0; return r; }
