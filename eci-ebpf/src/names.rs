//! Protected names: the directory of each protected socket carries the names it protects
//! ([`ProtectedDir`]), so that an inode that appears under such a name is tagged by the kernel at
//! once, with or without a running agent. Used by `d_instantiate` (an inode gets a name: `bind(2)`,
//! `mknod(2)`, `link(2)`, a lookup) and `inode_rename` (an inode is renamed into one).

use core::ffi::c_void;

use aya_ebpf::{bindings::inode, helpers::bpf_probe_read_kernel_str_bytes};
use eci_common::{MAX_NAMES_PER_DIR, PROTECTED_NAME_BYTES, PROTECTED_NAME_MAX, Protected};

use crate::{
    kernel,
    maps::{PROTECTED, PROTECTED_DIRS},
};

const WORDS: usize = PROTECTED_NAME_BYTES / 8;

pub enum Named {
    /// `dir` protects no name, or not this one.
    Unprotected,
    /// The inode carries a tag now: the name's, or the one it already had (a tag is never
    /// replaced here, so that linking or renaming the engine socket under the public socket's name
    /// cannot weaken it).
    Tagged,
    /// The name is protected but the inode could not be tagged (no memory for its storage).
    Failed(Protected),
}

/// Tags `target` when `dentry`'s name is one that `dir` protects.
///
/// The fast path, for a directory that protects nothing (nearly every call), is one inode-storage
/// lookup on `dir`.
#[inline(always)]
pub fn tag_if_protected(dir: *mut inode, dentry: *const c_void, target: *mut inode) -> Named {
    // SAFETY: `dir` is typed `struct inode *` by the verifier (a hook argument or loaded through
    // BTF-typed pointers), not NULL.
    let names = unsafe { PROTECTED_DIRS.get_ptr_mut(dir) };
    if names.is_null() {
        return Named::Unprotected;
    }
    let (len, name) = kernel::dentry_name(dentry);
    if len == 0 || len as usize > PROTECTED_NAME_MAX || name.is_null() {
        return Named::Unprotected;
    }
    // SAFETY (for every read of `names` below): non-null storage returned by the helper, valid
    // for this program run; only scalars are read through it, never the whole value (which is
    // larger than the BPF stack).
    let any_of_that_length = (0..MAX_NAMES_PER_DIR).any(|i| {
        // SAFETY: as above: scalars read through the helper's non-null storage.
        unsafe { (*names).names[i].class != 0 && (*names).names[i].len == len }
    });
    if !any_of_that_length {
        return Named::Unprotected;
    }
    // Zeroed, so that after the name (and its NUL) it compares equal to the zero-padded slot.
    let mut buf = [0u64; WORDS];
    // SAFETY: the array's bytes, viewed as bytes of the same length.
    let bytes = unsafe { &mut *buf.as_mut_ptr().cast::<[u8; PROTECTED_NAME_BYTES]>() };
    // SAFETY: the helper reads at most `bytes.len()` bytes of kernel memory, fault-safe.
    match unsafe { bpf_probe_read_kernel_str_bytes(name, bytes) } {
        Ok(read) if read.len() == len as usize => {}
        _ => return Named::Unprotected,
    }
    let mut class = 0;
    for i in 0..MAX_NAMES_PER_DIR {
        // SAFETY: see above.
        let slot = unsafe { &(*names).names[i] };
        if slot.class == 0 || slot.len != len {
            continue;
        }
        let words = slot.name.as_ptr().cast::<u64>();
        let mut same = true;
        for (w, mine) in buf.iter().enumerate() {
            // SAFETY: `name` is 8-byte aligned in the value and WORDS words long (asserted in
            // eci-common).
            if unsafe { words.add(w).read() } != *mine {
                same = false;
                break;
            }
        }
        if same {
            class = slot.class;
            break;
        }
    }
    if class == 0 {
        return Named::Unprotected;
    }
    let mut tag = Protected {
        class,
        reserved: 0,
        // SAFETY: see above.
        dev: unsafe { (*names).dev },
        ino: kernel::inode_number(target),
    };
    // Create-or-get: an inode that already carries a tag keeps it.
    // SAFETY: `target` is typed `struct inode *` by the verifier, not NULL.
    let stored = unsafe { PROTECTED.get_or_insert_ptr_mut(target, Some(&mut tag)) };
    if stored.is_null() {
        return Named::Failed(tag);
    }
    Named::Tagged
}
