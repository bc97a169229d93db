//! `cargo xtask browser-check`: `vmmtrace report --out` on a report, then its
//! index.html opened in Debian's headless chromium: the page must load with no
//! console message and every image decoded, and a screenshot is taken. Not part of
//! CI (chromium is a large install): run it after changing the charts or the page.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// The probe appended to a copy of the page: after load, it counts the images that
/// decoded and writes the count into the DOM that `--dump-dom` prints.
const PROBE: &str = "<script>window.addEventListener('load',()=>{const i=[...document.images];\
document.body.setAttribute('data-images-loaded',i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length)});</script>";

pub fn check(root: &Path, report: &Path, screenshot: &Path) -> anyhow::Result<()> {
    super::apt_install(&["chromium", "fonts-dejavu-core"])?;
    super::run(super::cargo().current_dir(root).args(["build", "-p", "vmmtrace"]))?;
    let dir = root.join("target/browser-check");
    let _ = std::fs::remove_dir_all(&dir);
    super::run(Command::new(root.join("target/debug/vmmtrace")).arg("report").arg(report).arg("--out").arg(&dir))?;
    let index = std::fs::read_to_string(dir.join("index.html")).context("read index.html")?;
    let probe = dir.join("probe.html");
    std::fs::write(&probe, index.replace("</body>", &format!("{PROBE}</body>")))?;
    let out = chromium()
        .args(["--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom"])
        .arg(file_url(&probe)?)
        .output()
        .context("run chromium")?;
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    if !console.is_empty() {
        bail!("index.html wrote to the console:\n{}", console.join("\n"));
    }
    let loaded = dom
        .split("data-images-loaded=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .context("the page did not finish loading in chromium (no probe result in its DOM)")?;
    let (ok, total) = loaded.split_once('/').context("probe result")?;
    if ok != total || total == "0" {
        bail!("index.html: {loaded} images loaded");
    }
    eprintln!("index.html: no console message, {loaded} images loaded");
    if let Some(parent) = screenshot.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let shot = chromium()
        .args(["--hide-scrollbars", "--window-size=1100,2600"])
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(file_url(&dir.join("index.html"))?)
        .output()
        .context("run chromium")?;
    // chromium logs its missing D-Bus at length: show its log only when it failed.
    if !shot.status.success() || !screenshot.exists() {
        bail!("chromium took no screenshot: {}", String::from_utf8_lossy(&shot.stderr));
    }
    eprintln!("screenshot: {}", screenshot.display());
    Ok(())
}

fn chromium() -> Command {
    let mut c = Command::new("chromium");
    // Root in a container: chromium's sandbox needs user namespaces it may not get.
    c.args(["--headless", "--no-sandbox", "--disable-gpu"]);
    c
}

fn file_url(path: &Path) -> anyhow::Result<String> {
    let abs: PathBuf = std::fs::canonicalize(path).with_context(|| format!("{}", path.display()))?;
    Ok(format!("file://{}", abs.display()))
}
