// () -> what a page shows once loaded: title, visible text length, node count, links, viewport
// meta, document height, the mutation count, and element counts.
() => {
  const d = document, b = d.body, de = d.documentElement, q = s => d.querySelectorAll(s).length;
  const vm = d.querySelector('meta[name="viewport" i]');
  const imgs = [...d.images];
  return {
    title: String(d.title || '').slice(0, 200),
    text: b ? (b.innerText || '').trim().length : 0,
    nodes: d.getElementsByTagName('*').length,
    links: [...d.querySelectorAll('a[href]')].slice(0, 1000).map(a => String(a.href)),
    viewport_meta: !!(vm && /width\s*=\s*device-width/i.test(vm.getAttribute('content') || '')),
    height: Math.max(de ? de.scrollHeight : 0, b ? b.scrollHeight : 0),
    muts: window.__vlm ? window.__vlm.muts : 0,
    counts: {images: imgs.length, broken_images: imgs.filter(i => i.complete && !i.naturalWidth)
      .length, forms: d.forms.length, buttons: q('button,[role=button],input[type=button]'),
      inputs: q('input,select,textarea'), scripts: q('script'), headings: q('h1,h2,h3'),
      iframes: q('iframe'), links: q('a[href]')},
  };
}
