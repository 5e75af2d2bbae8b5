// Installed in every frame before any site script (BrowserContext.add_init_script): neutralises
// dialogs, print, window.open and links/forms that would open a new tab (counting them all), and
// counts DOM mutations so a click can be judged by what it changed, and the navigations to
// another document the page starts (`leaving`: known here at once, before the request reaches
// the router, which on a loaded machine can take longer than the settle time). `effects` counts
// dialogs+popups and is never reset. Every snippet here tolerates a page that redefined globals
// (forms with an input named "submit", a missing body, no init script).
(() => {
  if (window.__vlm) return;
  const s = {dialogs: 0, popups: 0, effects: 0, muts: 0, leaving: 0, targets: [],
             doc: Math.random()};
  Object.defineProperty(window, '__vlm', {value: s});
  const stub = (k, v) => function () { s[k]++; s.effects++; return v; };
  window.alert = stub('dialogs'); window.confirm = stub('dialogs', false);
  window.prompt = stub('dialogs', null); window.print = stub('dialogs');
  window.open = stub('popups', null);
  const newTab = t => !!t && !/^_(self|top|parent)$/i.test(t) &&
    ![...document.querySelectorAll('iframe,frame')].some(f => f.name === t);
  const popup = e => { e.preventDefault(); s.popups++; s.effects++; };
  addEventListener('click', e => {
    const a = e.target && e.target.closest && e.target.closest('a[href],area[href]');
    if (a && !e.defaultPrevented && newTab(a.getAttribute('target'))) popup(e);
  }, true);
  addEventListener('submit', e => {
    if (e.target && newTab(e.target.getAttribute('target'))) popup(e);
  }, true);
  if (window.navigation) navigation.addEventListener('navigate', e => {
    if (!e.destination.sameDocument && !e.downloadRequest) s.leaving++;
  });
  new MutationObserver(r => { s.muts += r.length; }).observe(document,
    {subtree: true, childList: true, attributes: true, characterData: true});
})()
