// The in-page half of the aesthetics stage (vlmagent/rewards/aesthetics.py): run at the desktop
// and at the mobile viewport, it reads what the page shows from the DOM (computed styles, layout
// boxes) and returns plain JSON to judge. Text colour, the background behind it, font sizes, boxes
// and links are exact there; pixels only serve where the DOM cannot know (text on an image).
// Coordinates are CSS pixels in the document (scroll added); deviceScaleFactor is 1, so they are
// also screenshot pixels.
async () => {
  const d = document, de = d.documentElement;
  // Wait for web fonts (capped: a font that never settles must not hang the measure), then
  // finish finite animations and cancel infinite ones, as Playwright's screenshots do.
  try { await Promise.race([d.fonts && d.fonts.ready,
                            new Promise(r => setTimeout(r, 2000))]); } catch (e) {}
  try { for (const a of d.getAnimations()) { try { a.finish(); } catch (e) { a.cancel(); } } }
  catch (e) {}
  await new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)));
  const vw = innerWidth, vh = innerHeight, sx = scrollX, sy = scrollY;
  const docW = Math.max(de ? de.scrollWidth : 0, vw);
  const docH = Math.max(de ? de.scrollHeight : 0, d.body ? d.body.scrollHeight : 0, vh);
  // Any CSS colour (rgb, hsl, oklch, named) to [r, g, b, a] through a 1x1 canvas.
  const cv = d.createElement('canvas'); cv.width = cv.height = 1;
  const cx = cv.getContext('2d', {willReadFrequently: true}), cache = new Map();
  const rgba = c => {
    if (!c || c === 'transparent' || c === 'rgba(0, 0, 0, 0)') return [0, 0, 0, 0];
    if (cache.has(c)) return cache.get(c);
    cx.clearRect(0, 0, 1, 1); cx.fillStyle = '#000'; cx.fillStyle = c; cx.fillRect(0, 0, 1, 1);
    const p = cx.getImageData(0, 0, 1, 1).data, v = [p[0], p[1], p[2], p[3] / 255];
    cache.set(c, v); return v;
  };
  const over = (top, under) => { const a = top[3];
    return [0, 1, 2].map(i => top[i] * a + under[i] * (1 - a)).concat([1]); };
  const styles = new Map(), st = el => { let s = styles.get(el);
    if (!s) { s = getComputedStyle(el); styles.set(el, s); } return s; };
  // The colour behind an element: its own and its ancestors' backgrounds composited down to
  // the first opaque one (white canvas under all). `img`: a background image on the way.
  const bgs = new Map();
  const behind = el => {
    if (bgs.has(el)) return bgs.get(el);
    const stack = []; let img = false, e = el;
    for (; e && e.nodeType === 1; e = e.parentElement) {
      const s = st(e);
      if (s.backgroundImage && s.backgroundImage !== 'none') img = true;
      const c = rgba(s.backgroundColor);
      if (c[3] > 0) { stack.push(c); if (c[3] >= 1) break; }
    }
    let col = [255, 255, 255, 1];
    for (let i = stack.length - 1; i >= 0; i--) col = over(stack[i], col);
    const r = {c: col.slice(0, 3).map(Math.round), img};
    bgs.set(el, r); return r;
  };
  const alpha = el => { let a = 1;
    for (let e = el; e && e.nodeType === 1; e = e.parentElement) a *= parseFloat(st(e).opacity);
    return a; };
  const hidden = el => { const s = st(el), r = el.getBoundingClientRect();
    return s.visibility !== 'visible' || r.width < 2 || r.height < 2 ||
      (s.clip && s.clip !== 'auto') || (s.clipPath && s.clipPath !== 'none'); };
  const box = r => [r.left + sx, r.top + sy, r.width, r.height];
  const inDoc = r => r.width > 0.5 && r.height > 0.5 && r.right + sx > 0 && r.bottom + sy > 0
    && r.left + sx < docW;
  const blockOf = el => { let e = el;
    while (e.parentElement && /^(inline|contents)/.test(st(e).display)) e = e.parentElement;
    return e; };

  const texts = [], blocks = new Set(), ink = [], fonts = {}, palette = {};
  const addMass = (c, m) => { const k = c.slice(0, 3).map(Math.round).join(',');
    palette[k] = (palette[k] || 0) + m; };
  const walker = d.createTreeWalker(d.body || de, NodeFilter.SHOW_TEXT);
  const range = d.createRange();
  for (let n = walker.nextNode(); n && texts.length < 3000; n = walker.nextNode()) {
    const text = n.data.replace(/\s+/g, ' ').trim(), el = n.parentElement;
    if (!text || !el || /^(script|style|noscript|template|title)$/i.test(el.tagName)) continue;
    if (hidden(el)) continue;
    const op = alpha(el); if (op < 0.1) continue;
    range.selectNodeContents(n);
    const rects = [...range.getClientRects()].filter(inDoc).map(box);
    if (!rects.length) continue;
    const s = st(el), fg = rgba(s.color), bg = behind(el), fs = parseFloat(s.fontSize) || 0;
    const blk = blockOf(el), bs = st(blk);  // the column this text wraps in
    const bw = blk.clientWidth - parseFloat(bs.paddingLeft) - parseFloat(bs.paddingRight);
    const fam = (s.fontFamily || '').split(',')[0].trim().replace(/["']/g, '').toLowerCase();
    texts.push({n: text.length, t: text.slice(0, 40), r: rects.slice(0, 8), fs,
                fw: parseInt(s.fontWeight) || 400, fg: [fg[0], fg[1], fg[2], fg[3] * op],
                bg: bg.c, img: bg.img, ff: fam, bw: Math.max(0, bw || 0)});
    fonts[fam] = (fonts[fam] || 0) + text.length;
    addMass(fg, text.length * fs * fs * 0.5);  // glyph ink, roughly half of each em square
    blocks.add(blk);
    for (const r of rects) ink.push(r);
  }
  const REPLACED = 'img,svg,video,canvas,iframe,input,select,textarea,button,picture,object';
  for (const el of [...d.querySelectorAll(REPLACED)].slice(0, 1000)) {
    if (el.closest('svg') !== el && el.closest('svg')) continue;  // parts of an inline svg
    if (hidden(el) || alpha(el) < 0.1) continue;
    const r = el.getBoundingClientRect(); if (!inDoc(r)) continue;
    ink.push(box(r)); blocks.add(el);
  }
  // Backgrounds: each visible painted box adds its area of its colour; the canvas colour
  // (html, else body, else white) covers the whole document.
  const canvasBg = [de, d.body].map(e => e ? rgba(st(e).backgroundColor) : [0, 0, 0, 0])
    .find(c => c[3] > 0) || [255, 255, 255, 1];
  addMass(canvasBg, docW * docH);
  for (const el of [...d.querySelectorAll('body *')].slice(0, 5000)) {
    const s = st(el), c = rgba(s.backgroundColor); if (c[3] < 0.1) continue;
    if (s.visibility !== 'visible') continue;
    const r = el.getBoundingClientRect(), a = Math.max(0, r.width) * Math.max(0, r.height);
    if (a >= 64 && inDoc(r)) addMass(c, a);
  }
  // Overlap of text with other text, on line boxes shrunk to the glyph body (70% of the font
  // size around the line's middle), so tight line-heights of one paragraph do not count.
  const lines = [];
  texts.forEach((t, i) => { for (const [x, y, w, h] of t.r) {
    const hh = Math.min(h, 0.7 * t.fs), y0 = y + (h - hh) / 2;
    lines.push([x + 1, y0, x + w - 1, y0 + hh, i]); } });
  lines.sort((a, b) => a[1] - b[1]);
  let overlap = 0, area = 0;
  for (let i = 0; i < lines.length; i++) {
    const a = lines[i]; area += Math.max(0, a[2] - a[0]) * (a[3] - a[1]);
    for (let j = i + 1; j < lines.length && lines[j][1] < a[3]; j++) {
      const b = lines[j], w = Math.min(a[2], b[2]) - Math.max(a[0], b[0]);
      const h = Math.min(a[3], b[3]) - Math.max(a[1], b[1]);
      if (w > 0 && h > 0) overlap += w * h;
    }
  }
  const path = a => { try { return a.origin === location.origin ? a.pathname : null; }
    catch (e) { return null; } };
  const navLinks = [...d.querySelectorAll('nav a[href],header a[href],[role=navigation] a[href]')]
    .map(path).filter(Boolean).slice(0, 200);
  const links = [...d.querySelectorAll('a[href]')].map(path).filter(Boolean).slice(0, 500);
  const vm = d.querySelector('meta[name="viewport" i]');
  return {
    vw, vh, doc_w: docW, doc_h: docH, overflow: Math.max(0, (de ? de.scrollWidth : 0) - vw),
    viewport_meta: !!(vm && /width\s*=\s*device-width/i.test(vm.getAttribute('content') || '')),
    texts, ink: ink.slice(0, 6000),
    blocks: [...blocks].filter(e => !hidden(e)).map(e => box(e.getBoundingClientRect()))
      .filter(r => r[2] >= 4 && r[3] >= 4).slice(0, 2000),
    fonts, palette, overlap, text_area: area, nav: navLinks, links,
  };
}
