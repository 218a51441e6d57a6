// The page's screens (jobs, engines, schedules, operator), one shown at a time, chosen by the URL's hash
// (`#/engines`), so each has an address, works with back and forward, and survives a reload.

export class Screens {
  /** `nav`: the links (`data-screen`); `root`: holds the screens (`[data-screen]`); `onShow(name)` after a switch. */
  constructor(nav, root, onShow = () => {}) {
    this.links = [...nav.querySelectorAll('a[data-screen]')];
    this.screens = [...root.querySelectorAll(':scope > [data-screen]')];
    this.onShow = onShow;
    this.current = null;
    window.addEventListener('hashchange', () => this.follow());
  }

  /** Shows the screen the hash names (the jobs screen when it names none). */
  follow() {
    const match = /^#\/([a-z]+)$/.exec(window.location.hash);
    const names = this.screens.map((screen) => screen.dataset.screen);
    // Other fragments (the skip link's #main) are no screen: keep the one shown.
    if (!match && window.location.hash && this.current) return;
    const name = match && names.includes(match[1]) ? match[1] : 'jobs';
    for (const screen of this.screens) screen.hidden = screen.dataset.screen !== name;
    for (const link of this.links) {
      if (link.dataset.screen === name) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    const changed = this.current !== name;
    this.current = name;
    if (changed) this.onShow(name);
  }
}
