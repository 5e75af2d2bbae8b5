// (i) -> the i-th element stored by candidates.js, or null.
i => (window.__vlm && window.__vlm.targets[i]) || null
