// () -> {overflow: horizontal overflow in CSS px, height: document height}, at the viewport set.
() => { const de = document.documentElement, b = document.body;
  return {overflow: Math.max(0, (de ? de.scrollWidth : 0) - innerWidth),
          height: Math.max(de ? de.scrollHeight : 0, b ? b.scrollHeight : 0)}; }
