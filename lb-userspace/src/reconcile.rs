//! Turns configuration plus health into map contents, touching only what changed.
//!
//! The [`Store`] trait is the controller's whole view of the data plane, so this logic
//! runs against [`MemStore`] in unit tests and against the kernel maps
//! ([`crate::dataplane::Maps`]) in the daemon and the namespace tests.
//!
//! Ring updates are double-buffered (see `lb_common::Service::ring_slot`): the new ring
//! goes into the half the data plane is not reading, then one service-map update flips
//! the live half. Map-in-map would also be atomic, but needs an inner map per service
//! created at runtime and a second lookup per packet; the flip costs neither.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use anyhow::Context as _;
use lb_common::{
    BACKEND_DOWN, BACKEND_REDIRECT, Backend, FAMILY_V4, FAMILY_V6, SVC_MODE_ENCAP, SVC_MODE_L2,
    Service, ServiceKey, ring_index,
};

use crate::{
    config::{Config, Mode, ServiceConfig},
    maglev::{self, MaglevBackend},
};

/// What the reconciler needs from the data plane.
pub trait Store {
    fn service(&self, key: &ServiceKey) -> anyhow::Result<Option<Service>>;
    fn set_service(&mut self, key: &ServiceKey, svc: &Service) -> anyhow::Result<()>;
    fn remove_service(&mut self, key: &ServiceKey) -> anyhow::Result<()>;
    fn service_keys(&self) -> anyhow::Result<Vec<ServiceKey>>;
    fn backend(&self, id: u32) -> anyhow::Result<Backend>;
    fn set_backend(&mut self, id: u32, b: &Backend) -> anyhow::Result<()>;
    fn ring_slot(&self, idx: u32) -> anyhow::Result<u32>;
    fn set_ring_slot(&mut self, idx: u32, backend: u32) -> anyhow::Result<()>;
    fn config(&self) -> anyhow::Result<lb_common::Config>;
    fn set_config(&mut self, c: &lb_common::Config) -> anyhow::Result<()>;
    fn set_tx_port(&mut self, port: u32, ifindex: u32) -> anyhow::Result<()>;
}

/// In-memory [`Store`] for unit tests.
#[derive(Default, Debug)]
pub struct MemStore {
    pub services: BTreeMap<[u8; 20], (ServiceKey, Service)>,
    pub backends: BTreeMap<u32, Backend>,
    pub rings: BTreeMap<u32, u32>,
    pub config: lb_common::Config,
    pub ring_writes: usize,
    pub tx_ports: BTreeMap<u32, u32>,
}

fn key_bytes(k: &ServiceKey) -> [u8; 20] {
    let mut b = [0u8; 20];
    for (i, w) in k.addr_be.iter().enumerate() {
        b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    b[16..18].copy_from_slice(&k.port_be.to_ne_bytes());
    b[18] = k.proto;
    b[19] = k.family;
    b
}

impl Store for MemStore {
    fn service(&self, key: &ServiceKey) -> anyhow::Result<Option<Service>> {
        Ok(self.services.get(&key_bytes(key)).map(|(_, s)| *s))
    }
    fn set_service(&mut self, key: &ServiceKey, svc: &Service) -> anyhow::Result<()> {
        self.services.insert(key_bytes(key), (*key, *svc));
        Ok(())
    }
    fn remove_service(&mut self, key: &ServiceKey) -> anyhow::Result<()> {
        self.services.remove(&key_bytes(key));
        Ok(())
    }
    fn service_keys(&self) -> anyhow::Result<Vec<ServiceKey>> {
        Ok(self.services.values().map(|(k, _)| *k).collect())
    }
    fn backend(&self, id: u32) -> anyhow::Result<Backend> {
        Ok(self.backends.get(&id).copied().unwrap_or_default())
    }
    fn set_backend(&mut self, id: u32, b: &Backend) -> anyhow::Result<()> {
        // The kernel's array has MAX_BACKENDS entries; refuse as it does.
        anyhow::ensure!(
            id < lb_common::MAX_BACKENDS,
            "index is {id} but max_entries is {}",
            lb_common::MAX_BACKENDS
        );
        self.backends.insert(id, *b);
        Ok(())
    }
    fn ring_slot(&self, idx: u32) -> anyhow::Result<u32> {
        Ok(self.rings.get(&idx).copied().unwrap_or(0))
    }
    fn set_ring_slot(&mut self, idx: u32, backend: u32) -> anyhow::Result<()> {
        self.ring_writes += 1;
        self.rings.insert(idx, backend);
        Ok(())
    }
    fn config(&self) -> anyhow::Result<lb_common::Config> {
        Ok(self.config)
    }
    fn set_config(&mut self, c: &lb_common::Config) -> anyhow::Result<()> {
        self.config = *c;
        Ok(())
    }
    fn set_tx_port(&mut self, port: u32, ifindex: u32) -> anyhow::Result<()> {
        self.tx_ports.insert(port, ifindex);
        Ok(())
    }
}

/// Address as the map key words (wire order) and its family.
pub fn addr_words(a: IpAddr) -> ([u32; 4], u8) {
    match a {
        IpAddr::V4(v4) => ([u32::from_ne_bytes(v4.octets()), 0, 0, 0], FAMILY_V4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            ([w(0), w(4), w(8), w(12)], FAMILY_V6)
        }
    }
}

pub fn service_key(s: &ServiceConfig) -> ServiceKey {
    let (addr_be, family) = addr_words(s.vip);
    ServiceKey {
        addr_be,
        port_be: s.port.to_be(),
        proto: s.proto.number(),
        family,
    }
}

/// The marker entry that tells the data plane an address is a VIP (ICMP echo,
/// orphan fragments): proto ICMP/ICMPv6, port 0.
pub fn vip_marker(vip: IpAddr) -> ServiceKey {
    let (addr_be, family) = addr_words(vip);
    ServiceKey {
        addr_be,
        port_be: 0,
        proto: if family == FAMILY_V4 { 1 } else { 58 },
        family,
    }
}

/// Operator overrides of a backend, by address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum AdminState {
    /// Weight 0: no new flows, established flows continue.
    Drained,
    /// Weight set at runtime.
    Weight(u32),
}

/// What the controller knows beyond the config file.
#[derive(Debug, Default, Clone)]
pub struct Runtime {
    /// Backends currently failing health checks.
    pub down: BTreeSet<IpAddr>,
    /// Operator overrides.
    pub admin: BTreeMap<IpAddr, AdminState>,
    /// Resolved MACs (from config or the neighbour table).
    pub macs: BTreeMap<IpAddr, [u8; 6]>,
    /// ifindex of backend egress interfaces (redirect).
    pub ifindex: BTreeMap<String, u32>,
    /// MAC of the interface xdp_lb is attached to (zero: accept any destination MAC).
    pub lb_mac: [u8; 6],
}

impl Runtime {
    pub fn effective_weight(&self, b: &crate::config::BackendConfig) -> u32 {
        if self.down.contains(&b.address) {
            return 0;
        }
        match self.admin.get(&b.address) {
            Some(AdminState::Drained) => 0,
            Some(AdminState::Weight(w)) => *w,
            None => b.weight,
        }
    }
}

/// What [`Reconciler::apply`] will write, decided before it writes anything.
struct Plan {
    /// Every configured backend address -> its id (kept or new).
    backend_ids: BTreeMap<IpAddr, u32>,
    /// Backend interface -> (tx port, ifindex).
    ifindex: BTreeMap<String, (u32, u32)>,
    /// Per service, in config order: its id and its ring.
    service_ids: Vec<u32>,
    rings: Vec<Vec<u32>>,
}

/// Ids and rings the reconciler has written, so the next pass only writes changes.
#[derive(Debug, Default)]
pub struct Reconciler {
    /// Backend address -> id (stable across reloads; ids are never reused while the
    /// controller runs, so a pinned flow never lands on a different host).
    pub backend_ids: BTreeMap<IpAddr, u32>,
    next_backend: u32,
    /// Service name -> (id, key).
    pub service_ids: BTreeMap<String, (u32, ServiceKey)>,
    /// Service id -> live ring contents.
    rings: BTreeMap<u32, Vec<u32>>,
    /// Ring rebuilds written (a metric).
    pub ring_rebuilds: u64,
    /// Tx ports assigned per interface name.
    tx_ports: BTreeMap<String, u32>,
}

impl Reconciler {
    /// Learns ids and live rings from a data plane left by an earlier controller, so
    /// an adopted data plane is not flushed by the first pass.
    pub fn adopt(&mut self, store: &dyn Store, cfg: &Config) -> anyhow::Result<()> {
        for id in 1..lb_common::MAX_BACKENDS {
            let b = store.backend(id)?;
            if b.family == 0 {
                continue;
            }
            let addr = if b.family == FAMILY_V4 {
                IpAddr::from(b.addr_be[0].to_ne_bytes())
            } else {
                let mut o = [0u8; 16];
                for (i, w) in b.addr_be.iter().enumerate() {
                    o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
                }
                IpAddr::from(o)
            };
            self.backend_ids.insert(addr, id);
            self.next_backend = self.next_backend.max(id);
        }
        for s in cfg.services() {
            let key = service_key(s);
            if let Some(svc) = store.service(&key)? {
                self.service_ids.insert(s.name.clone(), (svc.id, key));
                let mut ring = Vec::with_capacity(svc.ring_size as usize);
                for slot in 0..svc.ring_size {
                    ring.push(store.ring_slot(ring_index(svc.id, svc.ring_slot & 1, slot))?);
                }
                self.rings.insert(svc.id, ring);
            }
        }
        Ok(())
    }

    /// Decides everything `apply` could refuse, without writing anything or changing
    /// `self`: ids for new backends and services, tx ports, ifindexes and every ring.
    /// A config refused here leaves the maps and the reconciler as they were, so the
    /// next reload starts from the same ids (a refused reload used to keep the ids it
    /// had handed out, and every later reload that added a backend ran past the map).
    fn plan(&self, cfg: &Config, rt: &Runtime) -> anyhow::Result<Plan> {
        let mut backend_ids = BTreeMap::new();
        let mut next = self.next_backend;
        for s in cfg.services() {
            for b in &s.backends {
                if backend_ids.contains_key(&b.address) {
                    continue;
                }
                let id = match self.backend_ids.get(&b.address) {
                    Some(id) => *id,
                    None => {
                        next += 1;
                        anyhow::ensure!(
                            next < lb_common::MAX_BACKENDS,
                            "no backend id left for {}: ids 1-{} are taken (ids of removed \
                             backends are not reused while their pinned flows may live, so a \
                             flow never moves to another host)",
                            b.address,
                            lb_common::MAX_BACKENDS - 1
                        );
                        next
                    }
                };
                backend_ids.insert(b.address, id);
            }
        }
        let mut tx_ports = self.tx_ports.clone();
        let mut ifindex = BTreeMap::new();
        for s in cfg.services() {
            for b in &s.backends {
                let Some(ifname) = &b.interface else { continue };
                let idx = rt.ifindex.get(ifname).copied().with_context(|| {
                    format!("interface {ifname} of backend {} not found", b.address)
                })?;
                let n = tx_ports.len() as u32;
                let port = *tx_ports.entry(ifname.clone()).or_insert(n);
                anyhow::ensure!(
                    port < lb_common::MAX_TX_PORTS,
                    "no tx port left for interface {ifname}: at most {} backend interfaces",
                    lb_common::MAX_TX_PORTS
                );
                ifindex.insert(ifname.clone(), (port, idx));
            }
        }
        let mut service_ids = Vec::new();
        let mut taken: BTreeSet<u32> = self.service_ids.values().map(|(id, _)| *id).collect();
        let mut rings = Vec::new();
        for s in cfg.services() {
            let id = match self.service_ids.get(&s.name) {
                Some((id, _)) => *id,
                None => {
                    let id = (0..lb_common::MAX_SERVICES)
                        .find(|id| !taken.contains(id))
                        .context("no free service id")?;
                    taken.insert(id);
                    id
                }
            };
            service_ids.push(id);
            let members: Vec<(u32, String, u32)> = s
                .backends
                .iter()
                .map(|b| {
                    (
                        backend_ids[&b.address],
                        b.address.to_string(),
                        rt.effective_weight(b),
                    )
                })
                .collect();
            let mb: Vec<MaglevBackend<'_>> = members
                .iter()
                .map(|(id, key, w)| MaglevBackend {
                    id: *id,
                    key,
                    weight: *w,
                })
                .collect();
            rings.push(
                maglev::build_ring(&mb, s.ring_size)
                    .with_context(|| format!("building the ring of service {}", s.name))?,
            );
        }
        Ok(Plan {
            backend_ids,
            ifindex,
            service_ids,
            rings,
        })
    }

    /// Makes the maps say what `cfg` + `rt` say. Returns the number of rings rewritten.
    ///
    /// A config that cannot be applied (no id left, a missing interface, a ring that
    /// cannot be built) is refused before the first write and changes nothing. A map
    /// write the kernel refuses part way leaves `self` describing what was written:
    /// ids whose backend entries reached the map stay taken, since a flow may already
    /// be pinned to them.
    pub fn apply(
        &mut self,
        store: &mut dyn Store,
        cfg: &Config,
        rt: &Runtime,
    ) -> anyhow::Result<usize> {
        let plan = self.plan(cfg, rt)?;
        let enc = &cfg.encap;
        let mut v6 = [0u32; 4];
        for (i, c) in enc.src_v6.octets().chunks(4).enumerate() {
            v6[i] = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
        }
        let mut global = lb_common::Config {
            hash_seed: cfg.hash_seed,
            encap_mtu: enc.mtu,
            // Bounded by config validation; saturating so no value can wrap to a
            // timeout of a fraction of a millisecond.
            udp_timeout_ns: cfg.udp_timeout_ms.saturating_mul(1_000_000),
            encap_src_v4_be: u32::from_ne_bytes(enc.src_v4.octets()),
            // Unchanged until everything below is written (see the end).
            epoch: store.config()?.epoch,
            encap_src_v6_be: v6,
            lb_mac: rt.lb_mac,
            _pad2: [0; 2],
        };
        store.set_config(&global)?;

        // Backends first: a ring never names an id whose entry is not written yet.
        for s in cfg.services() {
            for b in &s.backends {
                let id = plan.backend_ids[&b.address];
                let (addr_be, family) = addr_words(b.address);
                let mut flags = 0;
                if rt.down.contains(&b.address) {
                    flags |= BACKEND_DOWN;
                }
                let mut tx_port = 0;
                if let Some(ifname) = &b.interface {
                    flags |= BACKEND_REDIRECT;
                    let (port, ifindex) = plan.ifindex[ifname];
                    tx_port = port;
                    store.set_tx_port(tx_port, ifindex)?;
                    self.tx_ports.insert(ifname.clone(), tx_port);
                }
                let entry = Backend {
                    addr_be,
                    mac: rt.macs.get(&b.address).copied().unwrap_or_default(),
                    family,
                    flags,
                    tx_port,
                    _pad: 0,
                };
                if store.backend(id)? != entry {
                    store.set_backend(id, &entry)?;
                }
                self.backend_ids.insert(b.address, id);
                self.next_backend = self.next_backend.max(id);
            }
        }

        let mut rewritten = 0;
        let mut wanted_keys = BTreeSet::new();
        for ((s, id), ring) in cfg.services().zip(plan.service_ids).zip(plan.rings) {
            let key = service_key(s);
            wanted_keys.insert(key_bytes(&key));
            wanted_keys.insert(key_bytes(&vip_marker(s.vip)));
            if let Some((_, old_key)) = self.service_ids.get(&s.name)
                && *old_key != key
            {
                // The service moved to another VIP/port: retire the old key.
                store.remove_service(old_key)?;
            }
            self.service_ids.insert(s.name.clone(), (id, key));
            let flags = match s.mode {
                Mode::L2 => SVC_MODE_L2,
                Mode::Encap => SVC_MODE_ENCAP,
            };
            let current = store.service(&key)?;
            let unchanged = self.rings.get(&id) == Some(&ring)
                && current.is_some_and(|c| c.flags == flags && c.id == id);
            if unchanged {
                continue;
            }
            let live = current
                .filter(|c| c.id == id)
                .map_or(1, |c| c.ring_slot & 1);
            let next = live ^ 1;
            if self.rings.get(&id) != Some(&ring) {
                for (slot, b) in ring.iter().enumerate() {
                    store.set_ring_slot(ring_index(id, next, slot as u32), *b)?;
                }
                self.ring_rebuilds += 1;
                rewritten += 1;
            }
            let svc = Service {
                id,
                flags,
                ring_slot: if self.rings.get(&id) != Some(&ring) {
                    next
                } else {
                    live
                },
                ring_size: ring.len() as u32,
            };
            store.set_service(&key, &svc)?;
            store.set_service(
                &vip_marker(s.vip),
                &Service {
                    id,
                    flags: 0,
                    ring_slot: 0,
                    ring_size: 0,
                },
            )?;
            self.rings.insert(id, ring);
        }

        // Services (and VIP markers) no longer configured.
        for key in store.service_keys()? {
            if !wanted_keys.contains(&key_bytes(&key)) {
                store.remove_service(&key)?;
            }
        }
        let names: BTreeSet<&str> = cfg.services().map(|s| s.name.as_str()).collect();
        let gone: Vec<String> = self
            .service_ids
            .keys()
            .filter(|n| !names.contains(n.as_str()))
            .cloned()
            .collect();
        for n in gone {
            if let Some((id, _)) = self.service_ids.remove(&n) {
                self.rings.remove(&id);
            }
        }
        // Last: the XDP program's per-CPU flow caches drop every entry filled before
        // this point, so none outlives what was just written.
        global.epoch = global.epoch.wrapping_add(1);
        store.set_config(&global)?;
        Ok(rewritten)
    }

    /// The live ring of service `id`, as last written.
    pub fn ring(&self, id: u32) -> Option<&[u32]> {
        self.rings.get(&id).map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra_backend: bool, port2: Option<u16>) -> Config {
        let mut text = String::from(
            r#"
instance = "t"
interface = "eth0"
[[services]]
name = "a"
vip = "10.0.0.100"
proto = "tcp"
port = 80
ring_size = 251
backends = [ { address = "10.0.1.1", mac = "02:00:00:00:00:01" }, { address = "10.0.1.2", mac = "02:00:00:00:00:02" }"#,
        );
        if extra_backend {
            text.push_str(r#", { address = "10.0.1.3", mac = "02:00:00:00:00:03" }"#);
        }
        text.push_str(" ]\n");
        if let Some(p) = port2 {
            text.push_str(&format!(
                "[[services]]\nname = \"b\"\nvip = \"10.0.0.101\"\nproto = \"udp\"\nport = {p}\nring_size = 13\nbackends = [ {{ address = \"10.0.1.1\" }} ]\n"
            ));
        }
        Config::parse(&text, "t.toml").unwrap()
    }

    fn live_ring(store: &MemStore, key: &ServiceKey) -> Vec<u32> {
        let s = store.service(key).unwrap().unwrap();
        (0..s.ring_size)
            .map(|i| store.ring_slot(ring_index(s.id, s.ring_slot, i)).unwrap())
            .collect()
    }

    #[test]
    fn first_apply_writes_services_markers_backends_and_rings() {
        let c = cfg(false, Some(53));
        let mut st = MemStore::default();
        let mut r = Reconciler::default();
        assert_eq!(r.apply(&mut st, &c, &Runtime::default()).unwrap(), 2);
        // two services + two VIP markers
        assert_eq!(st.services.len(), 4);
        let ka = service_key(c.services().next().unwrap());
        let ring = live_ring(&st, &ka);
        assert_eq!(ring.len(), 251);
        assert!(ring.iter().all(|id| *id == 1 || *id == 2));
        assert_eq!(st.backend(1).unwrap().family, FAMILY_V4);
    }

    #[test]
    fn unchanged_config_writes_nothing() {
        let c = cfg(false, Some(53));
        let mut st = MemStore::default();
        let mut r = Reconciler::default();
        r.apply(&mut st, &c, &Runtime::default()).unwrap();
        let writes = st.ring_writes;
        assert_eq!(r.apply(&mut st, &c, &Runtime::default()).unwrap(), 0);
        assert_eq!(st.ring_writes, writes);
    }

    #[test]
    fn only_the_changed_ring_is_rewritten_into_the_other_half() {
        let mut st = MemStore::default();
        let mut r = Reconciler::default();
        r.apply(&mut st, &cfg(false, Some(53)), &Runtime::default())
            .unwrap();
        let c2 = cfg(true, Some(53));
        let kb = service_key(c2.services().nth(1).unwrap());
        let ka = service_key(c2.services().next().unwrap());
        let before_b = st.service(&kb).unwrap().unwrap();
        let before_a = st.service(&ka).unwrap().unwrap();
        let writes = st.ring_writes;
        assert_eq!(r.apply(&mut st, &c2, &Runtime::default()).unwrap(), 1);
        assert_eq!(
            st.ring_writes - writes,
            251,
            "only service a's ring was written"
        );
        assert_eq!(
            st.service(&kb).unwrap().unwrap(),
            before_b,
            "service b untouched"
        );
        let after_a = st.service(&ka).unwrap().unwrap();
        assert_ne!(
            after_a.ring_slot, before_a.ring_slot,
            "the live half flipped"
        );
        assert!(live_ring(&st, &ka).contains(&3));
    }

    #[test]
    fn down_and_drained_backends_leave_the_ring_and_empty_ring_is_size_zero() {
        let c = cfg(false, None);
        let ka = service_key(c.services().next().unwrap());
        let mut st = MemStore::default();
        let mut r = Reconciler::default();
        let mut rt = Runtime::default();
        rt.down.insert("10.0.1.1".parse().unwrap());
        r.apply(&mut st, &c, &rt).unwrap();
        assert!(live_ring(&st, &ka).iter().all(|id| *id == 2));
        assert_ne!(st.backend(1).unwrap().flags & BACKEND_DOWN, 0);
        rt.admin
            .insert("10.0.1.2".parse().unwrap(), AdminState::Drained);
        r.apply(&mut st, &c, &rt).unwrap();
        assert_eq!(st.service(&ka).unwrap().unwrap().ring_size, 0);
        // A drained backend is not "down": its pinned flows continue.
        assert_eq!(st.backend(2).unwrap().flags & BACKEND_DOWN, 0);
    }

    #[test]
    fn removed_service_and_its_marker_are_deleted() {
        let mut st = MemStore::default();
        let mut r = Reconciler::default();
        r.apply(&mut st, &cfg(false, Some(53)), &Runtime::default())
            .unwrap();
        r.apply(&mut st, &cfg(false, None), &Runtime::default())
            .unwrap();
        assert_eq!(st.services.len(), 2);
        assert!(
            st.service(&vip_marker("10.0.0.101".parse().unwrap()))
                .unwrap()
                .is_none()
        );
    }

    /// A refused apply (more backend addresses than ids; config validation refuses
    /// that too, so it is built by hand here) changes neither the maps nor the
    /// reconciler, and the next apply that adds one backend still fits. It used to
    /// keep the ids handed out before the map write failed ("index is 4096 but
    /// max_entries is 4096"), so every later reload that added a backend failed.
    #[test]
    fn a_refused_apply_leaves_ids_and_maps_as_they_were() {
        let c = cfg(false, Some(53));
        let mut st = MemStore::default();
        let mut r = Reconciler::default();
        r.apply(&mut st, &c, &Runtime::default()).unwrap();
        let ids = r.backend_ids.clone();
        let services = r.service_ids.clone();
        let (backends, svcs, writes) = (st.backends.clone(), st.services.clone(), st.ring_writes);

        let mut big = c.clone();
        big.services[0].get_mut().backends = (0..lb_common::MAX_BACKENDS)
            .map(|i| crate::config::BackendConfig {
                address: IpAddr::from([10, 2, (i / 256) as u8, (i % 256) as u8]),
                mac: Some("02:00:00:00:00:09".into()),
                weight: 1,
                interface: None,
            })
            .collect();
        let e = r.apply(&mut st, &big, &Runtime::default()).unwrap_err();
        assert!(format!("{e:#}").contains("no backend id left"), "{e:#}");
        assert_eq!(r.backend_ids, ids, "ids handed out by a refused apply");
        assert_eq!(r.service_ids, services);
        assert_eq!(st.backends, backends, "backends written by a refused apply");
        assert_eq!(st.services, svcs);
        assert_eq!(st.ring_writes, writes);

        let plus = cfg(true, Some(53));
        r.apply(&mut st, &plus, &Runtime::default()).unwrap();
        assert_eq!(r.backend_ids[&"10.0.1.3".parse::<IpAddr>().unwrap()], 3);
        let ka = service_key(plus.services().next().unwrap());
        assert!(live_ring(&st, &ka).contains(&3));
    }

    /// A backend interface that does not exist is refused before anything is written.
    #[test]
    fn a_missing_interface_is_refused_before_any_write() {
        let c = cfg(false, None);
        let mut st = MemStore::default();
        let mut r = Reconciler::default();
        r.apply(&mut st, &c, &Runtime::default()).unwrap();
        let (backends, writes) = (st.backends.clone(), st.ring_writes);
        let mut redirect = cfg(true, None);
        redirect.services[0].get_mut().backends[2].interface = Some("nope0".into());
        let e = r
            .apply(&mut st, &redirect, &Runtime::default())
            .unwrap_err();
        assert!(format!("{e:#}").contains("nope0"), "{e:#}");
        assert_eq!(st.backends, backends);
        assert_eq!(st.ring_writes, writes);
        assert!(
            !r.backend_ids
                .contains_key(&"10.0.1.3".parse::<IpAddr>().unwrap())
        );
    }

    /// The UDP timeout in nanoseconds saturates instead of wrapping (18446744073710 ms
    /// used to become 0.45 ms).
    #[test]
    fn udp_timeout_conversion_saturates() {
        let mut c = cfg(false, None);
        c.udp_timeout_ms = 18_446_744_073_710;
        let mut st = MemStore::default();
        Reconciler::default()
            .apply(&mut st, &c, &Runtime::default())
            .unwrap();
        assert_eq!(st.config.udp_timeout_ns, u64::MAX);
    }

    #[test]
    fn adopt_learns_ids_and_rings_so_nothing_is_rewritten() {
        let c = cfg(true, Some(53));
        let mut st = MemStore::default();
        let mut r = Reconciler::default();
        r.apply(&mut st, &c, &Runtime::default()).unwrap();
        let writes = st.ring_writes;
        let mut fresh = Reconciler::default();
        fresh.adopt(&st, &c).unwrap();
        assert_eq!(fresh.apply(&mut st, &c, &Runtime::default()).unwrap(), 0);
        assert_eq!(st.ring_writes, writes);
        assert_eq!(fresh.backend_ids, r.backend_ids);
    }
}
