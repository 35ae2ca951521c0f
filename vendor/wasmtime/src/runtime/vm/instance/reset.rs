//! wasmhost patch (see vendor/wasmtime/WASMHOST.md): a core instance's state
//! as instantiation left it, and putting that state back in place so the
//! instance can run again as if freshly instantiated.
//!
//! A core instance's mutable state is its `VMContext` (globals, memory and
//! table definitions, the lengths of passive data segments), its defined
//! memories and tables, and its passive element segments. All of it is
//! copied here right after instantiation, except memory contents: those are
//! put back to the module's image by the same `PAGEMAP_SCAN` reset the
//! pooling allocator uses, which is only right if instantiation left memory
//! exactly as the image (checked once, when the snapshot is taken).

use super::{Instance, PassiveElementSegment};
use crate::prelude::*;
use crate::runtime::vm::HostAlignedByteCount;
use crate::runtime::vm::cow::ResidentPages;
use crate::runtime::vm::memory::Memory;
use crate::runtime::vm::sys::vm::PageMap;
use crate::runtime::vm::table::FuncTableSnapshot;
use crate::vm::ValRaw;
use core::mem::MaybeUninit;
use core::ops::Range;
use core::pin::Pin;
use core::ptr;
use wasmtime_environ::{DefinedMemoryIndex, DefinedTableIndex, MemoryTunables, PtrSize};

/// One core instance's state right after instantiation.
pub(crate) struct CoreSnapshot {
    /// The whole `VMContext`, as bytes (padding included, hence
    /// `MaybeUninit`).
    vmctx: Box<[MaybeUninit<u8>]>,
    /// The part of `vmctx` never put back: the function references, which
    /// wasmtime fills in lazily, always with the same value for the same
    /// function. Putting back an unfilled one would break a reference handed
    /// out since.
    func_refs: Range<usize>,
    /// Each defined memory's size, and the pages its last reset kept
    /// resident (none before the first).
    memories: Vec<(DefinedMemoryIndex, usize, Option<ResidentPages>)>,
    /// Each defined table's elements.
    tables: Vec<(DefinedTableIndex, FuncTableSnapshot)>,
    /// Each passive element segment's elements (`elem.drop` empties them).
    passive_elements: Vec<Vec<ValRaw>>,
}

impl Instance {
    /// Copies this instance's state, which must be as instantiation left
    /// it. Fails, saying why, for an instance whose state cannot be put
    /// back: memory instantiation wrote beyond its image, a shared or
    /// unpooled memory, a table that is not a pooled funcref table, or
    /// passive segments of GC references.
    pub(crate) fn snapshot(&self, pagemap: &PageMap) -> Result<CoreSnapshot> {
        let module = self.env_module();
        let name = module.name.as_ref().map(|name| module.strings[*name].to_string());
        let name = name.as_deref().unwrap_or("a core module");
        let mut memories = Vec::new();
        for (index, (_, memory)) in self.memories.iter() {
            let pristine = match memory {
                Memory::Local(memory) => memory.is_pristine(pagemap),
                Memory::Shared(_) => false,
            };
            if !pristine {
                bail!(
                    "{name}: memory {} is not as its image after instantiation \
                     (written at start-up, shared, or not pooled)",
                    index.as_u32()
                );
            }
            memories.push((index, memory.byte_size(), None));
        }
        let mut tables = Vec::new();
        for (index, (_, table)) in self.tables.iter() {
            let Some(elements) = table.snapshot_funcrefs() else {
                bail!(
                    "{name}: table {} is not a pooled funcref table",
                    index.as_u32()
                );
            };
            tables.push((index, elements));
        }
        let mut passive_elements = Vec::new();
        for segment in self.passive_elements.iter() {
            if segment.needs_gc_rooting {
                bail!("{name}: a passive element segment holds GC references");
            }
            passive_elements.push(segment.elements.to_vec());
        }
        let offsets = self.offsets();
        let size = usize::try_from(offsets.size_of_vmctx())?;
        // The function references (and the start-up function's) are the one
        // part of the context skipped; check that nothing else lies between
        // them and the data segment bases that follow, should the layout
        // ever change.
        let refs = offsets.num_escaped_funcs + u32::from(offsets.has_startup_func);
        let refs_end = offsets.vmctx_func_refs_begin()
            + refs * u32::from(offsets.ptr.vm_func_ref().size());
        if refs_end != offsets.vmctx_runtime_data_bases_begin() {
            bail!("{name}: unexpected VMContext layout around its function references");
        }
        let func_refs = usize::try_from(offsets.vmctx_func_refs_begin())?
            ..usize::try_from(offsets.vmctx_runtime_data_bases_begin())?;
        let mut vmctx = vec![MaybeUninit::<u8>::uninit(); size].into_boxed_slice();
        // SAFETY: the `VMContext` is `size` bytes long, and copying it as
        // `MaybeUninit` bytes reads no padding as a value.
        unsafe {
            ptr::copy_nonoverlapping(
                self.vmctx().as_ptr().cast::<MaybeUninit<u8>>(),
                vmctx.as_mut_ptr(),
                size,
            );
        }
        Ok(CoreSnapshot {
            vmctx,
            func_refs,
            memories,
            tables,
            passive_elements,
        })
    }

    /// Puts back the state `snapshot` took from this instance: memories to
    /// their images and sizes, tables, passive element segments and the
    /// `VMContext`. With `only_resident_written`, the caller vouches that
    /// the instance wrote no page of its memories since the last restore
    /// other than those that restore kept resident (see
    /// `MemoryImageSlot::reset_in_place`). Returns whether any memory was
    /// scanned.
    ///
    /// # Safety
    ///
    /// `snapshot` must have been taken from this instance, and no wasm may
    /// be running in it (its store is held mutably, with no call under way).
    pub(crate) unsafe fn restore(
        mut self: Pin<&mut Self>,
        snapshot: &mut CoreSnapshot,
        pagemap: Option<&PageMap>,
        keep_resident: HostAlignedByteCount,
        memory_tunables: &MemoryTunables<'_>,
        only_resident_written: bool,
    ) -> Result<bool> {
        let mut scanned = false;
        for (index, size, resident) in &mut snapshot.memories {
            scanned |= match &mut self.as_mut().memories_mut()[*index].1 {
                Memory::Local(memory) => memory.reset_in_place(
                    pagemap,
                    keep_resident,
                    *size,
                    memory_tunables,
                    resident,
                    only_resident_written,
                )?,
                Memory::Shared(_) => bail!("a shared memory cannot be reset"),
            };
        }
        for (index, elements) in &snapshot.tables {
            self.as_mut().tables_mut()[*index]
                .1
                .restore_funcrefs(elements);
        }
        for (segment, saved) in self
            .as_mut()
            .passive_elements_mut()
            .iter_mut()
            .zip(&snapshot.passive_elements)
        {
            if segment.elements.len() == saved.len() {
                segment.elements.copy_from_slice(saved);
            } else {
                let mut elements = TryVec::with_capacity(saved.len())?;
                for element in saved {
                    elements.push(*element)?;
                }
                *segment = PassiveElementSegment {
                    needs_gc_rooting: false,
                    elements,
                };
            }
        }
        let vmctx = self.vmctx().as_ptr().cast::<MaybeUninit<u8>>();
        let saved = snapshot.vmctx.as_ptr();
        let end = snapshot.vmctx.len();
        // SAFETY: the snapshot is this instance's `VMContext`, so both
        // ranges lie inside it; nothing runs in the instance meanwhile.
        unsafe {
            ptr::copy_nonoverlapping(saved, vmctx, snapshot.func_refs.start);
            ptr::copy_nonoverlapping(
                saved.add(snapshot.func_refs.end),
                vmctx.add(snapshot.func_refs.end),
                end - snapshot.func_refs.end,
            );
        }
        Ok(scanned)
    }
}
