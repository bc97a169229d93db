//! The font chart text is drawn with. plotters lays text out with ab_glyph from a
//! TrueType file read at run time, so that building needs no system font library;
//! Debian's fonts-dejavu-core ships the default (`cargo xtask setup` installs it).

use std::{path::PathBuf, sync::OnceLock};

use plotters::style::FontStyle;

/// The family name the charts ask plotters for.
pub const FAMILY: &str = "sans-serif";

/// Tried in order after `$VMMTRACE_FONT`.
const CANDIDATES: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

#[derive(Clone, Debug, thiserror::Error)]
pub enum FontError {
    #[error(
        "no font to draw chart text with: install one (apt-get install fonts-dejavu-core) or point VMMTRACE_FONT at a .ttf file"
    )]
    NotFound,
    #[error("{0} is not a TrueType font plotters can read: point VMMTRACE_FONT at another .ttf file")]
    Invalid(PathBuf),
}

/// Registers the font once per process.
pub fn ensure_registered() -> Result<(), FontError> {
    static DONE: OnceLock<Result<(), FontError>> = OnceLock::new();
    DONE.get_or_init(register).clone()
}

fn register() -> Result<(), FontError> {
    let from_env = std::env::var_os("VMMTRACE_FONT").map(PathBuf::from);
    let path = from_env
        .into_iter()
        .chain(CANDIDATES.iter().map(PathBuf::from))
        .find(|p| p.is_file())
        .ok_or(FontError::NotFound)?;
    let bytes = std::fs::read(&path).map_err(|_| FontError::Invalid(path.clone()))?;
    // plotters keeps the font for the life of the process; this runs once.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    for style in [FontStyle::Normal, FontStyle::Bold] {
        plotters::style::register_font(FAMILY, style, bytes).map_err(|_| FontError::Invalid(path.clone()))?;
    }
    Ok(())
}
