// Prepended by the CDN mirror (web/cdn.py) to the Tailwind v4 browser build that answers the v3
// play CDN (cdn.tailwindcss.com). v3 pages configure it with `tailwind.config = {theme: {extend:
// {colors: ...}}, darkMode: 'class'}`; v4 has no `tailwind` global, so that line would throw and
// the custom colours and fonts would vanish. This global turns the config into v4 theme variables
// and the class-based dark variant, in a <style type="text/tailwindcss"> that the v4 build
// watches. Functions in the config (which need Tailwind's node modules) are skipped.
(() => {
  if (window.tailwind) return;
  const NS = {colors: 'color', fontFamily: 'font', fontSize: 'text', borderRadius: 'radius',
              boxShadow: 'shadow', screens: 'breakpoint', spacing: 'spacing'};
  const quote = f => /\s/.test(f) && !/^["']/.test(f) ? `"${f}"` : f;
  const vars = (name, v, out) => {
    if (Array.isArray(v)) {  // fontFamily: a stack; fontSize: [size, lineHeight]
      out.push(`${name}: ${name.startsWith('--font-') ? v.map(quote).join(', ') : v[0]};`);
    } else if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) vars(k === 'DEFAULT' ? name : `${name}-${k}`, x, out);
    } else if (typeof v === 'string' || typeof v === 'number') {
      out.push(`${name}: ${v};`);
    }
  };
  let config = {};
  const apply = () => {
    const theme = (config && config.theme) || {}, out = [];
    for (const src of [theme, theme.extend || {}]) {
      for (const [key, ns] of Object.entries(NS)) if (src[key]) vars(`--${ns}`, src[key], out);
    }
    let css = `@theme {\n${out.join('\n')}\n}\n`;
    if (['class', 'selector'].includes([].concat(config.darkMode || [])[0])) {
      css += '@custom-variant dark (&:where(.dark, .dark *));\n';
    }
    let style = document.getElementById('vlmagent-tailwind-config');
    if (!style) {
      style = document.createElement('style');
      style.id = 'vlmagent-tailwind-config';
      style.type = 'text/tailwindcss';
      (document.head || document.documentElement).appendChild(style);
    }
    style.textContent = css;
  };
  window.tailwind = {get config() { return config; }, set config(c) { config = c || {}; apply(); }};
})();
