//! Runs a compiled model: links the archive into a small C driver with the target's C toolchain and runs
//! it (natively, or under `qemu-aarch64` for aarch64 on another host). Used by `kiln run` and by the
//! end-to-end tests, so both exercise exactly what a C user links.
//!
//! With [`Runner::set_threads`] the driver calls `NAME_run_parallel` through the pthread pool of
//! `examples/c/kiln_pool.h` (the very file, compiled in), the way a C user would.

use crate::{io_err, Compiled, Error, Result};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How to build and run a program for one target.
#[derive(Clone, Debug)]
pub struct Toolchain {
    /// C compiler and its flags.
    pub cc: Vec<String>,
    /// Emulator prefix for running (empty for native).
    pub run_prefix: Vec<String>,
}

impl Toolchain {
    /// The toolchain for a target architecture on this host: the system `cc` for the host architecture,
    /// `aarch64-linux-gnu-gcc -static` + `qemu-aarch64` for aarch64 elsewhere.
    pub fn for_target(c: &Compiled) -> Result<Toolchain> {
        let arch = c.target.triple.architecture.to_string();
        let host = std::env::consts::ARCH;
        if arch == host {
            Ok(Toolchain {
                cc: vec!["cc".into()],
                run_prefix: vec![],
            })
        } else if arch == "aarch64" {
            Ok(Toolchain {
                cc: vec!["aarch64-linux-gnu-gcc".into(), "-static".into()],
                run_prefix: vec!["qemu-aarch64".into()],
            })
        } else {
            Err(Error::Usage(format!(
                "cannot run {arch} code on this {host} host"
            )))
        }
    }

    /// Whether the tools are installed.
    pub fn available(&self) -> bool {
        let ok = |tool: &str| {
            Command::new(tool)
                .arg("--version")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        ok(&self.cc[0]) && self.run_prefix.first().is_none_or(|t| ok(t))
    }
}

/// A linked driver program for one compiled model.
pub struct Runner {
    dir: tempfile::TempDir,
    exe: PathBuf,
    toolchain: Toolchain,
    inputs: Vec<usize>,
    outputs: Vec<usize>,
    threads: usize,
}

/// The pthread pool the driver runs `NAME_run_parallel` with: the example users are pointed to.
const POOL_SOURCE: &str = include_str!("../examples/c/kiln_pool.h");

/// The C driver: reads each input from a file, runs once (or `iters` times), writes each output.
/// `THREADS` 0 calls `NAME_run`; N > 0 calls `NAME_run_parallel` with a pool of N threads and
/// `tasks = N`.
fn driver_source(c: &Compiled) -> String {
    let n = &c.name;
    let mut s = String::new();
    writeln!(s, "#define _POSIX_C_SOURCE 200809L\n#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include <time.h>\n#include \"{n}.h\"\n#include \"kiln_pool.h\"").unwrap();
    s.push_str(
        "static void *load(const char *p, size_t n) {\n\
         \x20 void *b = aligned_alloc(64, n ? (n + 63) / 64 * 64 : 64);\n\
         \x20 FILE *f = fopen(p, \"rb\");\n\
         \x20 if (!b || !f || fread(b, 1, n, f) != n) { fprintf(stderr, \"cannot read %zu bytes from %s\\n\", n, p); exit(3); }\n\
         \x20 fclose(f);\n  return b;\n}\n",
    );
    let nin = c.inputs.len();
    let nout = c.outputs.len();
    writeln!(s, "int main(int argc, char **argv) {{").unwrap();
    // argv[0], inputs, outputs, the weights file, ITERS, THREADS.
    let nargs = 3 + nin + nout + c.weights.is_some() as usize;
    writeln!(s, "  if (argc != {nargs} && argc != {}) {{ fprintf(stderr, \"usage: driver{}{} ITERS THREADS [TIMES_FILE]\\n\"); return 4; }}", nargs + 1, " IN".repeat(nin) + &" OUT".repeat(nout), if c.weights.is_some() { " WEIGHTS" } else { "" }).unwrap();
    writeln!(
        s,
        "  void *ins[{}]; void *outs[{}];",
        nin.max(1),
        nout.max(1)
    )
    .unwrap();
    for (i, io) in c.inputs.iter().enumerate() {
        writeln!(s, "  ins[{i}] = load(argv[{}], {});", 1 + i, io.byte_size()).unwrap();
    }
    for (i, io) in c.outputs.iter().enumerate() {
        let b = io.byte_size();
        writeln!(
            s,
            "  outs[{i}] = aligned_alloc(64, {}); memset(outs[{i}], 0xAB, {b});",
            b.div_ceil(64).max(1) * 64
        )
        .unwrap();
    }
    writeln!(
        s,
        "  void *arena = aligned_alloc(64, {n}_ARENA_SIZE ? ({n}_ARENA_SIZE + 63) / 64 * 64 : 64);"
    )
    .unwrap();
    let wi = 1 + nin + nout;
    let warg = if let Some(w) = &c.weights {
        writeln!(s, "  void *weights = load(argv[{wi}], {});", w.len()).unwrap();
        ", weights"
    } else {
        ""
    };
    let iters_arg = wi + c.weights.is_some() as usize;
    writeln!(s, "  int iters = atoi(argv[{iters_arg}]);").unwrap();
    writeln!(s, "  int threads = atoi(argv[{}]);", iters_arg + 1).unwrap();
    writeln!(
        s,
        "  kiln_pool *pool = threads > 0 ? kiln_pool_new((unsigned)threads) : NULL;"
    )
    .unwrap();
    writeln!(
        s,
        "  if (threads > 0 && !pool) {{ fprintf(stderr, \"no memory for the thread pool\\n\"); return 8; }}"
    )
    .unwrap();
    writeln!(s, "  kiln_parallel par = kiln_pool_parallel(pool);").unwrap();
    writeln!(
        s,
        "  double *times = calloc(iters > 0 ? iters : 1, sizeof(double));"
    )
    .unwrap();
    writeln!(s, "  for (int it = 0; it < iters; it++) {{").unwrap();
    writeln!(
        s,
        "    struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);"
    )
    .unwrap();
    writeln!(
        s,
        "    int rc = pool ? {n}_run_parallel((const {n}_inputs *)ins, ({n}_outputs *)outs, arena{warg}, &par)\n\
         \x20                 : {n}_run((const {n}_inputs *)ins, ({n}_outputs *)outs, arena{warg});"
    )
    .unwrap();
    writeln!(s, "    clock_gettime(CLOCK_MONOTONIC, &t1);").unwrap();
    writeln!(
        s,
        "    times[it] = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);"
    )
    .unwrap();
    writeln!(
        s,
        "    if (rc != 0) {{ fprintf(stderr, \"{n}_run returned %d\\n\", rc); return 5; }}\n  }}"
    )
    .unwrap();
    writeln!(s, "  kiln_pool_free(pool);").unwrap();
    // Timings (ns per run) and peak RSS (KiB), for `kiln bench`.
    writeln!(s, "  if (argc == {}) {{", nargs + 1).unwrap();
    // VmHWM, not getrusage: Linux carries ru_maxrss across exec, so it would include the parent.
    writeln!(
        s,
        "    double rss = 0; char line[256]; FILE *st = fopen(\"/proc/self/status\", \"r\");"
    )
    .unwrap();
    writeln!(s, "    while (st && fgets(line, sizeof line, st)) if (!strncmp(line, \"VmHWM:\", 6)) rss = atof(line + 6);").unwrap();
    writeln!(s, "    if (st) fclose(st);").unwrap();
    writeln!(
        s,
        "    FILE *f = fopen(argv[{nargs}], \"wb\"); if (!f) return 7;"
    )
    .unwrap();
    writeln!(s, "    fwrite(&rss, sizeof rss, 1, f); fwrite(times, sizeof(double), iters, f); fclose(f);\n  }}").unwrap();
    for (i, io) in c.outputs.iter().enumerate() {
        writeln!(s, "  {{ FILE *f = fopen(argv[{}], \"wb\"); if (!f || fwrite(outs[{i}], 1, {}, f) != {}) return 6; fclose(f); }}", 1 + nin + i, io.byte_size(), io.byte_size()).unwrap();
    }
    s.push_str("  return 0;\n}\n");
    s
}

impl Runner {
    /// Writes the archive, header and driver into a temporary folder and links them.
    pub fn build(c: &Compiled) -> Result<Runner> {
        let toolchain = Toolchain::for_target(c)?;
        if !toolchain.available() {
            return Err(Error::Run(format!(
                "{} not found: run scripts/install-deps.sh to install the C toolchains and qemu",
                toolchain.cc[0]
            )));
        }
        let dir = tempfile::tempdir().map_err(io_err(Path::new("/tmp")))?;
        let d = dir.path();
        let lib = d.join(format!("lib{}.a", c.name));
        fs::write(&lib, &c.archive).map_err(io_err(&lib))?;
        let h = d.join(format!("{}.h", c.name));
        fs::write(&h, &c.header).map_err(io_err(&h))?;
        let src = d.join("driver.c");
        fs::write(&src, driver_source(c)).map_err(io_err(&src))?;
        let pool = d.join("kiln_pool.h");
        fs::write(&pool, POOL_SOURCE).map_err(io_err(&pool))?;
        if let Some(w) = &c.weights {
            fs::write(d.join("weights.bin"), w).map_err(io_err(d))?;
        }
        let exe = d.join("driver");
        let out = Command::new(&toolchain.cc[0])
            .args(&toolchain.cc[1..])
            .args(["-std=c11", "-O1", "-pthread", "-o"])
            .arg(&exe)
            .arg(&src)
            .arg("-I")
            .arg(d)
            .arg(&lib)
            .output()
            .map_err(io_err(Path::new(&toolchain.cc[0])))?;
        if !out.status.success() {
            return Err(Error::Run(format!(
                "linking the driver failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(Runner {
            dir,
            exe,
            toolchain,
            inputs: c.inputs.iter().map(|i| i.byte_size()).collect(),
            outputs: c.outputs.iter().map(|o| o.byte_size()).collect(),
            threads: 0,
        })
    }

    /// How later runs call the model: 0 (the default) calls `NAME_run` on one thread; `n > 0`
    /// calls `NAME_run_parallel` with a pool of `n` threads (the caller and `n - 1` workers) and
    /// `tasks = n`, so each heavy kernel is split into `n` parts.
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads;
    }

    /// Runs the model `iters` times on the given raw inputs (ONNX order, dense little-endian) and
    /// returns the raw outputs of the last run.
    pub fn run(&self, inputs: &[Vec<u8>], iters: usize) -> Result<Vec<Vec<u8>>> {
        self.run_inner(inputs, iters, false).map(|(outs, _)| outs)
    }

    /// Runs `iters` times and measures each run: the first is the cold run (first touch of code,
    /// weights and arena). Timing happens inside the driver, around `NAME_run` only.
    pub fn bench(&self, inputs: &[Vec<u8>], iters: usize) -> Result<Timings> {
        let (_, t) = self.run_inner(inputs, iters.max(1), true)?;
        Ok(t.expect("timings requested"))
    }

    fn run_inner(
        &self,
        inputs: &[Vec<u8>],
        iters: usize,
        timed: bool,
    ) -> Result<(Vec<Vec<u8>>, Option<Timings>)> {
        if inputs.len() != self.inputs.len() {
            return Err(Error::Usage(format!(
                "the model has {} inputs, {} given",
                self.inputs.len(),
                inputs.len()
            )));
        }
        let d = self.dir.path();
        let mut cmd = Command::new(
            self.toolchain
                .run_prefix
                .first()
                .map_or(self.exe.as_os_str(), |p| p.as_ref()),
        );
        if !self.toolchain.run_prefix.is_empty() {
            cmd.args(&self.toolchain.run_prefix[1..]).arg(&self.exe);
        }
        for (i, data) in inputs.iter().enumerate() {
            if data.len() != self.inputs[i] {
                return Err(Error::Usage(format!(
                    "input {i} has {} bytes, the model takes {}",
                    data.len(),
                    self.inputs[i]
                )));
            }
            let p = d.join(format!("in{i}.bin"));
            fs::write(&p, data).map_err(io_err(&p))?;
            cmd.arg(p);
        }
        let outs: Vec<PathBuf> = (0..self.outputs.len())
            .map(|i| d.join(format!("out{i}.bin")))
            .collect();
        cmd.args(&outs);
        if d.join("weights.bin").exists() {
            cmd.arg(d.join("weights.bin"));
        }
        cmd.arg(iters.to_string());
        cmd.arg(self.threads.to_string());
        let times_file = d.join("times.bin");
        if timed {
            cmd.arg(&times_file);
        }
        let out = cmd.output().map_err(io_err(&self.exe))?;
        if !out.status.success() {
            return Err(Error::Run(format!(
                "the compiled model failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let outs = outs
            .iter()
            .map(|p| fs::read(p).map_err(io_err(p)))
            .collect::<Result<Vec<_>>>()?;
        let timings = if timed {
            let raw = fs::read(&times_file).map_err(io_err(&times_file))?;
            let vals: Vec<f64> = raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let (rss, times) = vals
                .split_first()
                .ok_or_else(|| Error::Run("driver wrote no timings".into()))?;
            Some(Timings {
                runs_ns: times.to_vec(),
                peak_rss_kib: *rss as u64,
            })
        } else {
            None
        };
        Ok((outs, timings))
    }
}

/// A fixed pseudo-random input for `io`: floats in [-1, 1), integers in [0, 8), bools alternating.
/// Deterministic, so runs are repeatable.
pub fn pattern(io: &crate::IoInfo) -> Vec<u8> {
    let n: usize = io.dims.iter().product();
    let mut state: u32 = 0x9e37_79b9;
    let vals: Vec<f64> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 8) as f64 / (1u32 << 24) as f64
        })
        .collect();
    let t = if io.dtype.is_float() {
        let v: Vec<f64> = vals.iter().map(|x| x * 2.0 - 1.0).collect();
        kiln_ir::Tensor::from_f64(io.dtype, io.dims.clone(), &v)
    } else {
        let v: Vec<i64> = vals.iter().map(|x| (x * 8.0) as i64).collect();
        kiln_ir::Tensor::from_i64(io.dtype, io.dims.clone(), &v)
    };
    t.bytes().to_vec()
}

/// What [`Runner::bench`] measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Timings {
    /// Nanoseconds of each run, in order; the first is the cold run.
    pub runs_ns: Vec<f64>,
    /// Peak resident set of the driver process (KiB): model code and weights, arena, tensors, libc.
    pub peak_rss_kib: u64,
}

impl Timings {
    /// The `q` quantile (0..=1) of the warm runs (all but the first), in nanoseconds.
    pub fn quantile(&self, q: f64) -> f64 {
        let mut warm: Vec<f64> = self.runs_ns.iter().skip(1).copied().collect();
        if warm.is_empty() {
            warm = self.runs_ns.clone();
        }
        warm.sort_by(f64::total_cmp);
        let i = ((warm.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        warm[i]
    }
}
