// Builds the static site into dist/: hashed assets, no inline scripts (the CSP in public/_headers forbids them).
import { defineConfig } from 'vite';

export default defineConfig({
  base: './',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // Vite would inline small scripts as data: URLs for module preloading; the CSP allows only 'self'.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
  },
});
