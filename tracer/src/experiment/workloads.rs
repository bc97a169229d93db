//! The jobs: the real programs the study ran (401.bzip2 is bzip2, 445.gobmk is GNU Go),
//! each with a fixed amount of work, an input generated from a seed, and a check of
//! its result made after the run, outside the timed interval.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::plan::SplitMix64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// bzip2 -9 compressing a generated corpus, then decompressing it.
    Bzip2,
    /// GNU Go answering a generated GTP script of genmove queries.
    Gobmk,
}

/// Corpus bytes per unit of `--scale`: about 6 s of compress + decompress here (32 MiB
/// took 4.9 s of CPU).
pub const BZIP2_BYTES_PER_SCALE: usize = 40 << 20;
/// genmove queries per unit of `--scale`: about 6 s here at level 10 on 9x9 (14 took
/// 8.3 s of CPU).
pub const GOBMK_MOVES_PER_SCALE: usize = 10;
/// Moves in one game of the script before the board is cleared.
const GOBMK_MOVES_PER_GAME: usize = 14;
const GOBMK_LEVEL: u32 = 10;

impl Workload {
    pub const ALL: [Workload; 2] = [Workload::Bzip2, Workload::Gobmk];

    pub fn name(&self) -> &'static str {
        match self {
            Workload::Bzip2 => "bzip2",
            Workload::Gobmk => "gobmk",
        }
    }

    pub fn parse(s: &str) -> Result<Workload, String> {
        match s.trim() {
            "bzip2" => Ok(Workload::Bzip2),
            "gobmk" | "gnugo" => Ok(Workload::Gobmk),
            other => Err(format!("unknown workload {other:?}: give bzip2 or gobmk")),
        }
    }

    /// The program's usual paths, and the Debian package that has it.
    fn program(&self) -> (&'static [&'static str], &'static str) {
        match self {
            Workload::Bzip2 => (&["/usr/bin/bzip2", "/bin/bzip2"], "bzip2"),
            Workload::Gobmk => (&["/usr/games/gnugo", "/usr/bin/gnugo"], "gnugo"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error(
        "the {workload} workload needs the program {program}, which is not installed: run `apt-get install {package}`"
    )]
    Missing { workload: &'static str, program: &'static str, package: &'static str },
    #[error("cannot prepare the {workload} input in {dir}: {source}")]
    Io { workload: &'static str, dir: PathBuf, source: std::io::Error },
}

/// Finds a workload's program: its usual paths, then PATH.
pub fn find_program(w: Workload) -> Result<PathBuf, WorkloadError> {
    let (paths, package) = w.program();
    let name = Path::new(paths[0]).file_name().and_then(|n| n.to_str()).unwrap_or(package);
    paths
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| crate::record::resolve_command(name).ok())
        .ok_or(WorkloadError::Missing { workload: w.name(), program: name, package })
}

/// One process of a job: argv, stdin from a file or /dev/null, stdout to a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub argv: Vec<String>,
    pub stdin: Option<PathBuf>,
    pub stdout: PathBuf,
}

/// A workload made ready in a directory: its input, and how job i runs and is checked.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub workload: Workload,
    pub program: PathBuf,
    pub dir: PathBuf,
    /// bzip2: the corpus; gobmk: the GTP script.
    pub input: PathBuf,
    /// gobmk: the answers every run must give (set by the first run, the warm-up).
    pub reference: Option<String>,
}

/// The size of a workload's input at a given scale.
pub fn amount(w: Workload, scale: f64) -> usize {
    let per = match w {
        Workload::Bzip2 => BZIP2_BYTES_PER_SCALE,
        Workload::Gobmk => GOBMK_MOVES_PER_SCALE,
    };
    ((per as f64 * scale).round() as usize).max(1)
}

/// Writes the input of `w` at `scale` into `dir`, generated from `seed`.
pub fn prepare(w: Workload, scale: f64, seed: u64, dir: &Path) -> Result<Prepared, WorkloadError> {
    let program = find_program(w)?;
    let io = |source| WorkloadError::Io { workload: w.name(), dir: dir.to_path_buf(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    let (input, bytes) = match w {
        Workload::Bzip2 => (dir.join("corpus.txt"), corpus(seed, amount(w, scale))),
        Workload::Gobmk => (dir.join("queries.gtp"), gtp_script(seed, amount(w, scale)).into_bytes()),
    };
    std::fs::write(&input, bytes).map_err(io)?;
    Ok(Prepared { workload: w, program, dir: dir.to_path_buf(), input, reference: None })
}

impl Prepared {
    fn job_dir(&self, job: usize) -> PathBuf {
        self.dir.join(format!("job-{job}"))
    }

    /// The processes job `job` runs, one after the other.
    pub fn steps(&self, job: usize) -> Vec<Step> {
        let dir = self.job_dir(job);
        let prog = self.program.to_string_lossy().into_owned();
        let path = |p: &Path| p.to_string_lossy().into_owned();
        match self.workload {
            Workload::Bzip2 => {
                let packed = dir.join("corpus.txt.bz2");
                vec![
                    Step {
                        argv: vec![prog.clone(), "-9".into(), "-c".into(), path(&self.input)],
                        stdin: None,
                        stdout: packed.clone(),
                    },
                    Step {
                        argv: vec![prog, "-d".into(), "-c".into(), path(&packed)],
                        stdin: None,
                        stdout: dir.join("unpacked.txt"),
                    },
                ]
            }
            Workload::Gobmk => vec![Step {
                argv: vec![
                    prog,
                    "--mode".into(),
                    "gtp".into(),
                    "--seed".into(),
                    "1".into(),
                    "--level".into(),
                    GOBMK_LEVEL.to_string(),
                ],
                stdin: Some(self.input.clone()),
                stdout: dir.join("answers.gtp"),
            }],
        }
    }

    /// A file of job `job`'s own (removed with its outputs after the check).
    pub fn job_file(&self, job: usize, name: &str) -> PathBuf {
        self.job_dir(job).join(name)
    }

    /// Creates job `job`'s output directory (before the run starts).
    pub fn make_job_dir(&self, job: usize) -> std::io::Result<()> {
        std::fs::create_dir_all(self.job_dir(job))
    }

    /// Checks job `job`'s result: bzip2's round trip gives the corpus back; GNU Go's
    /// answers are well formed and equal the reference, which the first check sets.
    pub fn check(&mut self, job: usize) -> Result<(), String> {
        let dir = self.job_dir(job);
        let res = match self.workload {
            Workload::Bzip2 => check_round_trip(&self.input, &dir.join("unpacked.txt")),
            Workload::Gobmk => {
                let answers = std::fs::read_to_string(dir.join("answers.gtp"))
                    .map_err(|e| format!("cannot read GNU Go's answers: {e}"))?;
                let expected = std::fs::read_to_string(&self.input).map(|s| count_commands(&s)).unwrap_or(0);
                check_gtp_answers(&answers, expected)?;
                match &self.reference {
                    Some(r) if *r != answers => Err("GNU Go's answers differ from the reference run's".into()),
                    Some(_) => Ok(()),
                    None => {
                        self.reference = Some(answers);
                        Ok(())
                    }
                }
            }
        };
        // The outputs are large (bzip2) and no longer needed.
        let _ = std::fs::remove_dir_all(&dir);
        res
    }
}

fn check_round_trip(original: &Path, unpacked: &Path) -> Result<(), String> {
    let a = std::fs::read(original).map_err(|e| format!("cannot read the corpus: {e}"))?;
    let b = std::fs::read(unpacked).map_err(|e| format!("cannot read bzip2's decompressed output: {e}"))?;
    if a == b {
        Ok(())
    } else {
        Err(format!("bzip2's round trip differs from the corpus ({} bytes in, {} out)", a.len(), b.len()))
    }
}

fn count_commands(script: &str) -> usize {
    script.lines().filter(|l| !l.trim().is_empty()).count()
}

/// A GTP session's answers: one "= ..." per command, none an error ("? ...").
pub fn check_gtp_answers(answers: &str, commands: usize) -> Result<(), String> {
    let replies: Vec<&str> = answers.lines().filter(|l| !l.trim().is_empty()).collect();
    if let Some(bad) = replies.iter().find(|l| !l.starts_with('=')) {
        return Err(format!("GNU Go answered with an error: {bad:?}"));
    }
    if replies.len() != commands {
        return Err(format!("GNU Go gave {} answers to {commands} commands", replies.len()));
    }
    Ok(())
}

/// Text with the statistics of natural language (a Zipf-like word frequency, lines,
/// punctuation, numbers), so that bzip2 works as on real text; `len` bytes.
pub fn corpus(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = SplitMix64(seed);
    let vocabulary: Vec<String> = (0..4096)
        .map(|_| {
            let n = 2 + rng.below(6) + rng.below(4);
            (0..n).map(|_| (b'a' + rng.below(26) as u8) as char).collect()
        })
        .collect();
    let mut out = Vec::with_capacity(len + 64);
    let mut line = 0usize;
    while out.len() < len {
        // Squaring a uniform draw favours low ranks: a few words are very common.
        let r = rng.below(1 << 16) as f64 / 65536.0;
        let w = &vocabulary[(r * r * r * vocabulary.len() as f64) as usize];
        out.extend_from_slice(w.as_bytes());
        line += w.len() + 1;
        match rng.below(40) {
            0 => out.extend_from_slice(format!(" {}", rng.below(100_000)).as_bytes()),
            1 | 2 => out.push(b','),
            3 => out.push(b'.'),
            _ => {}
        }
        if line > 60 + rng.below(20) as usize {
            out.push(b'\n');
            line = 0;
        } else {
            out.push(b' ');
        }
    }
    out.truncate(len);
    out
}

/// A GTP script of `moves` genmove queries on 9x9, in games of a few dozen moves that
/// each open with seeded stones (on points that never touch, so always legal), then
/// `quit`.
pub fn gtp_script(seed: u64, moves: usize) -> String {
    const POINTS: [&str; 9] = ["C3", "C5", "C7", "E3", "E5", "E7", "G3", "G5", "G7"];
    let mut rng = SplitMix64(seed);
    let mut s = String::from("boardsize 9\n");
    let mut left = moves;
    while left > 0 {
        s.push_str("clear_board\n");
        let mut points = POINTS.to_vec();
        rng.shuffle(&mut points);
        for (i, p) in points.iter().take(2 + rng.below(3) as usize).enumerate() {
            let _ = writeln!(s, "play {} {p}", if i % 2 == 0 { "black" } else { "white" });
        }
        for i in 0..left.min(GOBMK_MOVES_PER_GAME) {
            let _ = writeln!(s, "genmove {}", if i % 2 == 0 { "black" } else { "white" });
        }
        left -= left.min(GOBMK_MOVES_PER_GAME);
    }
    s.push_str("quit\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_is_seeded_and_sized() {
        let a = corpus(1, 100_000);
        assert_eq!(a.len(), 100_000);
        assert_eq!(a, corpus(1, 100_000));
        assert_ne!(a, corpus(2, 100_000));
        assert!(a.iter().all(|b| b.is_ascii()));
        assert!(a.iter().filter(|&&b| b == b'\n').count() > 1000);
    }

    #[test]
    fn gtp_script_has_the_asked_number_of_genmoves() {
        let s = gtp_script(3, 50);
        assert_eq!(s.lines().filter(|l| l.starts_with("genmove")).count(), 50);
        assert_eq!(s.lines().filter(|l| *l == "clear_board").count(), 50usize.div_ceil(GOBMK_MOVES_PER_GAME));
        assert!(s.ends_with("quit\n"));
        assert_eq!(s, gtp_script(3, 50));
        assert_ne!(s, gtp_script(4, 50));
    }

    #[test]
    fn gtp_answers_are_checked() {
        assert!(check_gtp_answers("= \n\n= C3\n\n= \n\n", 3).is_ok());
        assert!(check_gtp_answers("= \n\n? illegal move\n\n", 2).unwrap_err().contains("illegal"));
        assert!(check_gtp_answers("= \n\n", 2).unwrap_err().contains("1 answers to 2"));
    }

    #[test]
    fn names_round_trip() {
        for w in Workload::ALL {
            assert_eq!(Workload::parse(w.name()).unwrap(), w);
        }
        assert!(Workload::parse("mcf").is_err());
    }
}
