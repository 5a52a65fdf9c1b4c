"""The pack in ComfyUI's real frontend: headless Chromium against a real ComfyUI (COMFYUI_DIR).

Every workflow in workflows/ is loaded with ``app.loadGraphData``: no missing node types, the
frontend shows every widget value the file gives (named as the server's /object_info lays them
out), saving the graph again gives the same graph back, and its own API export (``graphToPrompt``)
equals tests/workflow_format.py's conversion. The frame-count extension snaps and labels the
length widget, and a node's help page renders in the frontend's help view (1.27: node library;
1.49: right-side panel). Screenshots go to the test's tmp dir (paths printed).

Driven over the Chrome DevTools Protocol with websocket-client (no browser-automation package).
Skips without COMFYUI_DIR or a Chromium binary (CHROMIUM, or chromium / chromium-browser / google-chrome
on PATH).
"""

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import workflow_builder
import workflow_format as wf
from comfyui_server import comfyui_fixture

pytestmark = pytest.mark.comfyui
comfyui = comfyui_fixture()

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = sorted((ROOT / "workflows").glob("*.json"))


def _chromium() -> str | None:
    candidates = [os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"]
    return next((shutil.which(c) for c in candidates if c and shutil.which(c)), None)


class Chromium:
    """A headless Chromium with one page, driven through the DevTools protocol."""

    def __init__(self, binary: str, width: int = 1600, height: int = 1000):
        import websocket

        self.profile = tempfile.mkdtemp(prefix="vdit-chromium-")
        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={self.profile}", "--remote-debugging-port=0", f"--window-size={width},{height}",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                raise RuntimeError("Chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        target = next(p for p in pages if p["type"] == "page")
        self.ws = websocket.create_connection(target["webSocketDebuggerUrl"], suppress_origin=True, timeout=120)
        self.ids = itertools.count(1)
        self.console = []

    def call(self, method: str, **params):
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            if message.get("method") == "Runtime.consoleAPICalled":
                args = message["params"]["args"]
                self.console.append((message["params"]["type"],
                                     " ".join(str(a.get("value", a.get("description", ""))) for a in args)))

    def js(self, expression: str):
        """Evaluate in the page (promises awaited); returns the JSON value or raises the JS error."""
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(details.get("exception", {}).get("description") or details.get("text"))
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.js(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"page never satisfied: {expression}")
            time.sleep(0.25)

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self):
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


# The frontend (1.27.10) maps some combo names (vae_name, lora_name, ckpt_name) to native loader
# nodes; when one of those is absent (UpscaleModelLoader, without the optional spandrel package, as
# in this CPU test install) it fails to build any node with such a combo, native VAELoader
# included. Drop the absent providers so the test install behaves like a complete one.
REPAIR_MODEL_PROVIDERS = """(() => {
  const pinia = document.querySelector('#vue-app').__vue_app__.config.globalProperties.$pinia;
  const store = pinia._s.get('modelToNode');
  if (!store) return 'no store';  // a frontend without the mapping has nothing to repair
  store.registerDefaults();
  for (const key of Object.keys(store.modelToNodeMap))
    store.modelToNodeMap[key] = store.modelToNodeMap[key].filter((provider) => provider.nodeDef);
  return 'ok';
})()"""


@pytest.fixture(scope="module")
def page(comfyui):
    binary = _chromium()
    if binary is None:
        pytest.skip("no Chromium found (set CHROMIUM or install chromium)")
    for name in workflow_builder.MODEL_FILES.values():  # listed model names, as a real install has
        path = comfyui.base_dir / "models" / "easyanimate" / name
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
        else:
            path.mkdir(parents=True, exist_ok=True)
            (path / "config.json").write_text("{}")
    comfyui._request("/settings/Comfy.TutorialCompleted", True)  # no template dialog over the canvas
    browser = Chromium(binary)
    try:
        browser.call("Runtime.enable")
        browser.call("Page.navigate", url=comfyui.url)
        browser.wait_for("!!(window.app && window.app.graph && window.app.extensionManager)")
        browser.wait_for("app.extensions.some((e) => e.name === 'vdit.frames')")
        assert browser.js(REPAIR_MODEL_PROVIDERS) in ("ok", "no store")
        yield browser
    finally:
        browser.close()


def _load(page, flow: dict):
    page.js(f"app.loadGraphData({json.dumps(flow)}).then(() => true)")
    time.sleep(0.3)


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.stem)
def test_workflow_opens_and_the_frontend_reads_it_as_we_do(page, comfyui, path):
    """Compared through the API format, which names every value, rather than as positional lists:
    frontends differ in how they re-serialise a node (a node without widgets saves [] in 1.27 and
    nothing in 1.49; a dynamic combo saves its chosen option's values after it), and the server's
    /object_info says where each value sits."""
    flow = json.loads(path.read_text())
    definitions = comfyui.object_info()
    errors_before = sum(1 for kind, _ in page.console if kind == "error")
    _load(page, flow)
    missing = page.js("app.graph._nodes.filter((n) => !LiteGraph.registered_node_types[n.type]).map((n) => n.type)")
    assert missing == []
    converted = wf.ui_to_api(flow, definitions)
    # the values it shows in its widgets, by name, are the ones the file gives each input
    shown = json.loads(page.js("""JSON.stringify(Object.fromEntries(app.graph._nodes.map((n) => [n.id,
        Object.fromEntries((n.widgets ?? []).map((w) => [w.name, w.value]))])))"""))
    for node_id, node in converted.items():
        literals = {k: v for k, v in node["inputs"].items() if not isinstance(v, list)}
        assert {k: shown[node_id].get(k) for k in literals} == literals, node["class_type"]
    # saving it again gives the same graph back
    saved = json.loads(page.js("JSON.stringify(app.graph.serialize())"))
    assert _by_name(wf.ui_to_api(saved, definitions)) == _by_name(converted)
    # and its own API export is our conversion
    exported = json.loads(page.js("app.graphToPrompt().then((p) => JSON.stringify(p.output))"))
    assert _by_name(exported) == _by_name(converted)
    new_errors = [text for kind, text in page.console if kind == "error"][errors_before:]
    assert new_errors == []


def _by_name(prompt: dict) -> dict:
    return {k: (n["class_type"], n["inputs"]) for k, n in prompt.items()}


def test_length_widget_snaps_and_shows_latent_frames(page):
    _load(page, json.loads((ROOT / "workflows" / "text_to_video.json").read_text()))
    steps = page.js("""(() => {
      const node = app.graph._nodes.find((n) => n.type === 'VDiT_EmptyLatentVideo');
      const widget = node.widgets.find((w) => w.name === 'length');
      const seen = [[widget.value, widget.label]];
      for (const value of [17, 18, 20, 10, 8, 7]) { widget.value = value; widget.callback(value); seen.push([widget.value, widget.label]); }
      return seen;
    })()""")
    # one arrow step past a valid count moves to the next one that way; a typed count goes to the nearest
    assert steps == [[16, "length (4 latent)"], [17, "length (5 latent)"], [24, "length (6 latent)"],
                     [17, "length (5 latent)"], [9, "length (3 latent)"], [8, "length (2 latent)"],
                     [1, "length (1 latent)"]]
    labels = page.js("""app.graph._nodes.find((n) => n.type === 'VDiT_ContextOptions')?.widgets.map((w) => w.label)
                        ?? null""")
    assert labels is None  # text_to_video has no context options; the long-video workflow does
    _load(page, json.loads((ROOT / "workflows" / "long_video_context_windows.json").read_text()))
    labels = page.js("app.graph._nodes.find((n) => n.type === 'VDiT_ContextOptions').widgets.map((w) => w.label)")
    assert labels[:2] == ["context_length (16 frames)", "context_overlap (8 frames)"]


# How a node's help page is opened: frontend 1.27 has a node-help store behind the node library;
# later ones (1.49) show it in the right-side panel's "info" tab for the selected node.
OPEN_HELP = """(() => {
  const pinia = document.querySelector('#vue-app').__vue_app__.config.globalProperties.$pinia;
  const help = pinia._s.get('nodeHelp');
  if (help) {
    const tabs = pinia._s.get('sidebarTab');
    if (tabs.activeSidebarTabId !== 'node-library') tabs.toggleSidebarTab('node-library');
    help.openHelp(pinia._s.get('nodeDef').nodeDefsByName[NODE]);
    return 'node library';
  }
  const panel = pinia._s.get('rightSidePanel');
  if (panel) {
    app.canvas.deselectAll();
    app.canvas.selectNode(app.graph._nodes.find((n) => n.type === NODE));
    panel.openPanel('info');
    return 'right-side panel';
  }
  return null;
})()"""


def test_node_help_page_renders_in_the_help_panel(page, tmp_path):
    _load(page, json.loads((ROOT / "workflows" / "text_to_video.json").read_text()))
    where = page.js(OPEN_HELP.replace("NODE", json.dumps("VDiT_Sampler")))
    assert where, "this frontend has neither help route"
    page.wait_for("document.body.innerText.includes('One node covers')", timeout=30)
    rendered = page.js("""(() => {
      const heading = [...document.querySelectorAll('h1')].find((h) => h.textContent.includes('EasyAnimate Sampler'));
      const table = [...document.querySelectorAll('table')].find((t) => t.textContent.includes('Video to video'));
      return [!!heading, !!table];
    })()""")
    assert rendered == [True, True]  # markdown rendered, not shown as text
    shot = page.screenshot(tmp_path / "comfyui_vdit_sampler_help.png")
    print(f"help page in the {where}; screenshot: {shot}")
    assert shot.stat().st_size > 10_000
