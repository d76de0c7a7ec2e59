//! Prints one PASS/FAIL line per libclang check and exits non-zero on any FAIL:
//! - libclang loads through `clang_sys::load()`, the call bindgen makes (it panics
//!   with "Unable to find libclang" where this fails);
//! - the `clang` driver is found by `clang_sys::support::Clang::find(None, &[])`,
//!   which bindgen asks for the system include paths;
//! - with those include paths libclang parses a C header that includes what
//!   llama.h includes (a libclang without its resource headers fails here).

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::process::ExitCode;
use std::ptr;

use clang_sys::support::Clang;
use clang_sys::*;

fn main() -> ExitCode {
    let mut ok = true;
    let loaded = match clang_sys::load() {
        Ok(()) => {
            let library = clang_sys::get_library().expect("loaded just now");
            let version = library
                .version()
                .map_or("unknown".into(), |v| format!("{v:?}"));
            println!(
                "PASS libclang: {} (clang-sys version(): {version})",
                library.path().display()
            );
            true
        }
        Err(e) => {
            println!("FAIL libclang: clang_sys::load(): {e}");
            ok = false;
            false
        }
    };

    let include_paths = match Clang::find(None, &[]) {
        Some(clang) => {
            println!(
                "PASS clang driver: {} ({})",
                clang.path.display(),
                clang.version.map_or("version unknown".into(), |v| format!(
                    "{}.{}.{}",
                    v.Major, v.Minor, v.Subminor
                ))
            );
            clang.c_search_paths.unwrap_or_default()
        }
        None => {
            println!("FAIL clang driver: clang_sys::support::Clang::find found no clang");
            ok = false;
            Vec::new()
        }
    };

    if loaded {
        match parse_header(&include_paths) {
            Ok(()) => println!("PASS libclang parses C headers (stddef, stdint, stdbool, stdio)"),
            Err(e) => {
                println!("FAIL libclang parses C headers: {e}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Parses a header like llama.h's includes, passing the driver's include paths
/// as `-isystem` the way bindgen does; returns the error diagnostics, if any.
fn parse_header(include_paths: &[std::path::PathBuf]) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("prereq-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let header = dir.join("probe.h");
    std::fs::write(
        &header,
        "#include <stddef.h>\n#include <stdint.h>\n#include <stdbool.h>\n#include <stdio.h>\n\
         typedef struct { size_t n; int32_t x; bool b; } probe_t;\n",
    )
    .map_err(|e| e.to_string())?;

    let mut args = vec!["-x".to_string(), "c".to_string()];
    for path in include_paths {
        args.push("-isystem".into());
        args.push(path.display().to_string());
    }
    let args: Vec<CString> = args.into_iter().map(|a| CString::new(a).unwrap()).collect();
    let argv: Vec<*const c_char> = args.iter().map(|a| a.as_ptr()).collect();
    let file = CString::new(header.display().to_string()).unwrap();

    let mut errors = Vec::new();
    // SAFETY: libclang is loaded; every object is disposed of once, after use.
    unsafe {
        let index = clang_createIndex(0, 0);
        let unit = clang_parseTranslationUnit(
            index,
            file.as_ptr(),
            argv.as_ptr(),
            argv.len() as i32,
            ptr::null_mut(),
            0,
            CXTranslationUnit_None,
        );
        if unit.is_null() {
            errors.push("clang_parseTranslationUnit returned nothing".to_string());
        } else {
            for i in 0..clang_getNumDiagnostics(unit) {
                let diagnostic = clang_getDiagnostic(unit, i);
                if clang_getDiagnosticSeverity(diagnostic) >= CXDiagnostic_Error {
                    let text =
                        clang_formatDiagnostic(diagnostic, clang_defaultDiagnosticDisplayOptions());
                    errors.push(
                        CStr::from_ptr(clang_getCString(text))
                            .to_string_lossy()
                            .into_owned(),
                    );
                    clang_disposeString(text);
                }
                clang_disposeDiagnostic(diagnostic);
            }
            clang_disposeTranslationUnit(unit);
        }
        clang_disposeIndex(index);
    }
    let _ = std::fs::remove_dir_all(&dir);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}
