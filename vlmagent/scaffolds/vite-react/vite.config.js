// Locked scaffold file: every generated site is built with exactly this config.
import fs from "node:fs";
import path from "node:path";
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

const root = fs.realpathSync(process.cwd());
const deps = fs.realpathSync(path.join(root, "node_modules"));
const inside = (p, dir) => p === dir || p.startsWith(dir + path.sep);

// Generated code is untrusted: an import of a host file (`../../etc/passwd?raw`, an absolute
// path) would copy that file into the built site. Only the project and node_modules may load.
function stayInside() {
  return {
    name: "vlmagent-stay-inside",
    enforce: "pre",
    load(id) {
      const file = id.split("?")[0];
      if (!path.isAbsolute(file) || file.startsWith("\0")) return null;
      let real = file;
      try {
        real = fs.realpathSync(file);
      } catch {
        return null;
      }
      if (!inside(real, root) && !inside(real, deps)) {
        throw new Error(`import outside the project: ${path.relative(root, file)}`);
      }
      return null;
    },
  };
}

export default defineConfig({
  plugins: [stayInside(), react()],
  base: "./",
  cacheDir: ".vite-cache",
  // Explicit, so Vite never probes folders above the project (the build may not read them).
  server: { fs: { allow: [root] } },
  css: { postcss: {} },
  logLevel: "warn",
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false, reportCompressedSize: false },
});
