// (j) -> whether filled form j is valid. Submits it on the next task, so this evaluate returns
// before any navigation starts.
j => {
  const f = document.forms[j]; if (!f) return false;
  const btn = f.querySelector('button:not([type]),button[type=submit],input[type=submit]');
  const valid = HTMLFormElement.prototype.checkValidity.call(f);
  setTimeout(() => { try { HTMLFormElement.prototype.requestSubmit.call(f, btn || undefined); }
    catch (e) { HTMLFormElement.prototype.submit.call(f); } }, 0);
  return valid;
}
