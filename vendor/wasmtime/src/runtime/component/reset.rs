//! wasmhost patch (see vendor/wasmtime/WASMHOST.md): putting a component
//! instance back, in place, to the state instantiation left it in, so that
//! one instance serves request after request with a fresh instance's state
//! and without the cost of instantiating and freeing one each time.
//!
//! [`Instance::snapshot`] copies that state right after instantiation, and
//! refuses instances whose state cannot be put back exactly (see
//! `vm/instance/reset.rs`). [`InstanceSnapshot::restore`] puts it back:
//! every core instance's memories (to their images, by `PAGEMAP_SCAN`),
//! tables, globals and segments, and the component's own context and handle
//! tables. [`InstanceSnapshot::restore_known_pages`] does the same without
//! the scan, for an embedder that knows the instance wrote no page its last
//! reset did not find written. What lives outside the instance is the
//! embedder's to reset: its store data (host resources, WASI state), fuel
//! and epoch deadline.

use crate::component::Instance;
use crate::prelude::*;
use crate::runtime::vm::CoreSnapshot;
use crate::store::{InstanceId, StoreId};
use crate::AsContextMut;
use core::mem::MaybeUninit;
use wasmtime_environ::{MemoryKind, MemoryTunables};

/// A component instance's state right after instantiation, to put back with
/// [`InstanceSnapshot::restore`].
pub struct InstanceSnapshot {
    store: StoreId,
    instance: Instance,
    vmctx: Box<[MaybeUninit<u8>]>,
    cores: Vec<(InstanceId, CoreSnapshot)>,
}

impl core::fmt::Debug for InstanceSnapshot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("InstanceSnapshot")
            .field("core_instances", &self.cores.len())
            .finish_non_exhaustive()
    }
}

// SAFETY: the raw pointers a snapshot holds (function references in tables,
// globals and segments) point into its own store's instances, and are only
// written back into that store, which is itself `Send` and `Sync`.
unsafe impl Send for InstanceSnapshot {}
// SAFETY: see above; a shared snapshot is only read.
unsafe impl Sync for InstanceSnapshot {}

impl Instance {
    /// Copies this instance's state, for [`InstanceSnapshot::restore`] to put
    /// back after each use. Must be called right after instantiation, before
    /// anything runs in the instance.
    ///
    /// Fails, saying why, unless every memory is a pooled one holding
    /// exactly its image after instantiation (no start function or
    /// instantiation-time data segment wrote to it), every table is a pooled
    /// funcref table, the handle tables are empty, and the engine has a
    /// pooling allocator and a kernel with `PAGEMAP_SCAN`.
    ///
    /// What a start function left in globals or tables is put back as it
    /// left it, at every reset: a value it drew (from a clock, from host
    /// entropy) stays the same for every use of the instance, where a new
    /// instance would draw again.
    pub fn snapshot(&self, mut store: impl AsContextMut) -> Result<InstanceSnapshot> {
        let store = store.as_context_mut().0;
        self.id().assert_belongs_to(store.id());
        let engine = store.engine().clone();
        let Some(pooling) = engine.allocator().as_pooling() else {
            bail!("instances are reset in place only with the pooling allocator");
        };
        let Some(pagemap) = pooling.in_place_reset_params().0 else {
            bail!("instances are reset in place only where the kernel has PAGEMAP_SCAN");
        };
        let component = self.id().get(store);
        // Emptied at each reset: a handle made at instantiation (by a start
        // function) would be lost, and the next handles numbered otherwise.
        if !component.handle_tables_empty() {
            bail!("instantiation left handles in the component's handle tables");
        }
        let vmctx = component.snapshot_vmctx();
        let ids: Vec<InstanceId> = component.core_instances().collect();
        let mut cores = Vec::with_capacity(ids.len());
        for id in ids {
            cores.push((id, store.instance(id).snapshot(pagemap)?));
        }
        Ok(InstanceSnapshot {
            store: store.id(),
            instance: *self,
            vmctx,
            cores,
        })
    }
}

impl InstanceSnapshot {
    /// Puts the instance back to the state this snapshot copied.
    ///
    /// Call it only after a call into the instance returned normally: an
    /// instance that trapped, or with a call still under way, is refused.
    ///
    /// # Panics
    ///
    /// Panics if `store` is not the store of the snapshot's instance.
    pub fn restore(&mut self, store: impl AsContextMut) -> Result<()> {
        self.put_back(store, false).map(drop)
    }

    /// Like [`InstanceSnapshot::restore`], but where the last restore scanned
    /// a memory for written pages, puts back only the pages that scan found
    /// (and kept resident) instead of scanning again: a scan is a walk of
    /// every page of the memory by the kernel, and costs microseconds even
    /// when a call wrote a handful. A memory never scanned yet, or grown
    /// since, is scanned as by `restore`.
    ///
    /// The caller vouches that since the last restore nothing wrote any
    /// other page of the instance's memories: not the instance, not the
    /// host, not another thread or the kernel on its behalf. Writing any
    /// other page takes a page fault (after a reset, every page the scan
    /// did not find is the image's, the zero page, or unmapped), so an
    /// embedder that ran the instance on one thread only, read that
    /// thread's fault count (`getrusage(RUSAGE_THREAD)`) before the
    /// instance's first instruction and again now, found it unchanged, and
    /// lets nothing else write the memory, knows it. If the claim is wrong,
    /// the next use of the instance may see what this one wrote; it cannot
    /// touch memory outside the instance.
    ///
    /// The kernel must not make pages writable behind the process's back
    /// either: transparent huge pages do (`khugepaged`, or `MADV_COLLAPSE`,
    /// collapsing a range fills its unmapped pages in), so the embedder
    /// should run with them off (`prctl(PR_SET_THP_DISABLE)`).
    ///
    /// Returns whether every memory was put back without a scan.
    pub fn restore_known_pages(&mut self, store: impl AsContextMut) -> Result<bool> {
        self.put_back(store, true).map(|scanned| !scanned)
    }

    fn put_back(
        &mut self,
        mut store: impl AsContextMut,
        only_resident_written: bool,
    ) -> Result<bool> {
        let store = store.as_context_mut().0;
        assert!(
            store.id() == self.store,
            "a snapshot is restored into its own store"
        );
        if store.trapped() {
            bail!("an instance that trapped is not reset");
        }
        // A call still under way (a host import calling this, or a call that
        // failed without leaving its scope) may have wasm on the stack.
        if store.current_scope_id_not_concurrent()?.is_some() {
            bail!("an instance with a call under way is not reset");
        }
        let engine = store.engine().clone();
        let Some(pooling) = engine.allocator().as_pooling() else {
            bail!("instances are reset in place only with the pooling allocator");
        };
        let (pagemap, keep_resident) = pooling.in_place_reset_params();
        let tunables = MemoryTunables::new(engine.tunables(), MemoryKind::LinearMemory);
        let mut scanned = false;
        for (id, core) in &mut self.cores {
            // SAFETY: the snapshot was taken from this instance of this
            // store, and holding the store mutably means nothing runs in it.
            scanned |= unsafe {
                store.instance_mut(*id).restore(
                    core,
                    pagemap,
                    keep_resident,
                    &tunables,
                    only_resident_written,
                )?
            };
        }
        let (component, counter) = store
            .store_data_mut()
            .instance_and_handle_counter(self.instance.id().instance());
        // SAFETY: as above.
        unsafe { component.restore_in_place(&self.vmctx, counter) };
        Ok(scanned)
    }
}
