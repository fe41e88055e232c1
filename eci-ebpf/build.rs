//! Rebuild the BPF object when bpf-linker changes. The path of the linker is an imperfect key (an
//! in-place upgrade keeps the path), but cargo offers no better one (cargo#4587).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
