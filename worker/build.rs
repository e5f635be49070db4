//! Links libtorch_cuda for real, bakes an rpath to libtorch into the worker's binaries, and
//! compiles `csrc/aten_ops.cpp` (ATen operators tch does not wrap, see
//! [`crate::aten`]) against libtorch's headers.
//!
//! The linker's as-needed default drops `libtorch_cuda.so` because no symbol of it is
//! referenced directly; CUDA then silently reports "unavailable" on a GPU machine. torch-sys
//! (a direct dependency, `links = "tch"`) hands us its lib directory as `DEP_TCH_LIBTORCH_LIB`.

use std::path::Path;

/// The PyTorch release tch 0.24.0 is generated against.
const EXPECTED_TORCH: &str = "2.11.0";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={ATEN_OPS}");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let lib_dir = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys did not say where libtorch is (DEP_TCH_LIBTORCH_LIB): run `make setup` first");
    let lib_dir = Path::new(&lib_dir);
    check_pytorch_version(lib_dir);
    compile_aten_ops(lib_dir);
    println!("cargo:rustc-link-arg=-Wl,-rpath={}", lib_dir.display());
    if lib_dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}

/// The C++ side of `src/aten.rs`.
const ATEN_OPS: &str = "csrc/aten_ops.cpp";

/// Compiles [`ATEN_OPS`] with libtorch's headers (`lib/../include`, in a PyTorch wheel and in
/// a libtorch archive alike) and the C++ ABI torch-sys builds with.
fn compile_aten_ops(lib_dir: &Path) {
    let include = lib_dir.parent().map(|root| root.join("include")).filter(|dir| dir.is_dir());
    let Some(include) = include else {
        panic!("libtorch's headers are not next to {} (expected ../include)", lib_dir.display());
    };
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    cc::Build::new()
        .cpp(true)
        .file(ATEN_OPS)
        .include(&include)
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .warnings(false)
        .extra_warnings(false)
        .flag_if_supported("-w")
        .compile("bertsweep_aten_ops");
}

/// A PyTorch wheel has no `build-version` file, so torch-sys cannot check the version when
/// LIBTORCH points into one; `torch/version.py` next to `lib/` tells us instead.
fn check_pytorch_version(lib_dir: &Path) {
    let Some(version_py) = lib_dir.parent().map(|torch| torch.join("version.py")) else {
        return;
    };
    let Ok(text) = std::fs::read_to_string(&version_py) else {
        return;
    };
    let found = text
        .lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim().trim_matches('\'').trim_matches('"').to_owned());
    if let Some(found) = found {
        let release = found.split('+').next().unwrap_or_default();
        if release != EXPECTED_TORCH {
            panic!("tch 0.24.0 needs PyTorch {EXPECTED_TORCH}, but {} is {found}", version_py.display());
        }
    }
}
