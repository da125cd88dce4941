//! The VRRPv3 state machine of RFC 5798 section 6.4, pure and clock-injected.
//!
//! [`Machine::handle`] takes an [`Event`] and the current instant and returns the
//! [`Action`]s the runtime must perform, in order. It never reads a clock, touches a
//! socket or sleeps, so every transition is unit-tested below with synthetic time.
//!
//! There is one timer: the Adver_Timer in Master and the Master_Down_Timer in Backup
//! (the RFC never runs both). The runtime keeps it from [`Action::SetTimer`] /
//! [`Action::CancelTimer`] and feeds [`Event::Timer`] when it is due.
//!
//! Beyond the RFC:
//! - **Fault** (as keepalived): a tracked condition failed (interface down, XDP
//!   program detached, no healthy backend). The node gives up mastership like a
//!   shutdown (priority 0 advert, so the backup takes over after Skew_Time) and stays
//!   silent until tracking recovers, then starts over as on Startup.
//! - **Preempt delay** (as keepalived's `preempt_delay`): a Backup that sees a
//!   lower-priority master waits this long before preempting it; meanwhile it treats
//!   the master's adverts as if preemption were off, so a dying master is still taken
//!   over after Master_Down_Interval.

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Protocol state (section 6.4), plus Fault for tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum State {
    Initialize,
    Backup,
    Master,
    Fault,
}

impl State {
    /// Upper-case name, as keepalived passes it to notify scripts.
    pub fn name(self) -> &'static str {
        match self {
            State::Initialize => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }

    /// A number for a metrics gauge: 0 init, 1 backup, 2 master, 3 fault.
    pub fn as_gauge(self) -> u64 {
        match self {
            State::Initialize => 0,
            State::Backup => 1,
            State::Master => 2,
            State::Fault => 3,
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The configuration the machine needs (section 6.1 parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// 1..=255; 255 = address owner.
    pub priority: u8,
    /// Advertisement_Interval in centiseconds.
    pub advert_interval_cs: u16,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// This router's primary address on the interface (section 6.1), for the
    /// equal-priority tie-break of section 6.4.3.
    pub primary: IpAddr,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Section 6.4.1 Startup.
    Startup,
    /// Section 6.4.2/6.4.3 Shutdown (graceful stop).
    Shutdown,
    /// A valid advert for our VRID (the receiver has checked TTL, version, checksum
    /// and VRID: section 7.1).
    Advert {
        src: IpAddr,
        priority: u8,
        max_advert_int_cs: u16,
    },
    /// The timer set by the last [`Action::SetTimer`] is due.
    Timer,
    /// The tracked conditions changed; `ok == false` means fault.
    Tracking { ok: bool },
}

/// What the runtime must do, in the order returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send an ADVERTISEMENT with this priority (0 on shutdown / fault).
    SendAdvert {
        priority: u8,
    },
    /// Add the VIPs to the interface, then send gratuitous ARPs / unsolicited NAs.
    TakeVips,
    /// Remove the VIPs from the interface.
    ReleaseVips,
    /// (Re)arm the single timer to fire at this instant.
    SetTimer(Instant),
    CancelTimer,
    /// The state changed: log, count, notify.
    Transition {
        from: State,
        to: State,
    },
}

/// One virtual router instance.
#[derive(Debug, Clone)]
pub struct Machine {
    params: Params,
    state: State,
    /// Master_Adver_Interval in centiseconds (section 6.1), learned in Backup.
    master_adver_interval_cs: u16,
    timer: Option<Instant>,
    /// The current master as far as we know: ourselves in Master, the source of the
    /// last advert we accepted in Backup.
    master: Option<IpAddr>,
    /// When a pending preemption (preempt delay) may happen.
    preempt_at: Option<Instant>,
}

fn cs(cs: u16) -> Duration {
    Duration::from_millis(u64::from(cs) * 10)
}

impl Machine {
    pub fn new(params: Params) -> Machine {
        Machine {
            master_adver_interval_cs: params.advert_interval_cs,
            params,
            state: State::Initialize,
            timer: None,
            master: None,
            preempt_at: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn master(&self) -> Option<IpAddr> {
        self.master
    }

    pub fn timer(&self) -> Option<Instant> {
        self.timer
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn master_adver_interval(&self) -> Duration {
        cs(self.master_adver_interval_cs)
    }

    /// Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256 (section 6.1).
    ///
    /// Computed in microseconds rather than centiseconds: the formula is the same, but
    /// integer centiseconds would truncate the skew to zero for short intervals (e.g.
    /// 1 cs at priority 200), losing the priority ordering that skew exists for.
    pub fn skew_time(&self) -> Duration {
        let mai_us = u64::from(self.master_adver_interval_cs) * 10_000;
        Duration::from_micros((256 - u64::from(self.params.priority)) * mai_us / 256)
    }

    /// Master_Down_Interval = (3 * Master_Adver_Interval) + Skew_Time (section 6.1).
    pub fn master_down_interval(&self) -> Duration {
        3 * self.master_adver_interval() + self.skew_time()
    }

    fn advert_interval(&self) -> Duration {
        cs(self.params.advert_interval_cs)
    }

    fn set_timer(&mut self, at: Instant, out: &mut Vec<Action>) {
        self.timer = Some(at);
        out.push(Action::SetTimer(at));
    }

    fn cancel_timer(&mut self, out: &mut Vec<Action>) {
        self.timer = None;
        out.push(Action::CancelTimer);
    }

    fn transition(&mut self, to: State, out: &mut Vec<Action>) {
        let from = self.state;
        self.state = to;
        if to != State::Backup {
            self.preempt_at = None;
        }
        self.master = match to {
            State::Master => Some(self.params.primary),
            State::Backup => self.master,
            State::Initialize | State::Fault => None,
        };
        out.push(Action::Transition { from, to });
    }

    /// Section 6.4.2 "If the Master_Down_Timer fires" and 6.4.1 for the owner.
    fn become_master(&mut self, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::SendAdvert {
            priority: self.params.priority,
        });
        out.push(Action::TakeVips);
        self.set_timer(now + self.advert_interval(), out);
        self.transition(State::Master, out);
    }

    /// Section 6.4.1 Startup, also used when tracking recovers from Fault.
    fn startup(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.params.priority == 255 {
            self.become_master(now, out);
        } else {
            self.master_adver_interval_cs = self.params.advert_interval_cs;
            self.master = None;
            self.set_timer(now + self.master_down_interval(), out);
            self.transition(State::Backup, out);
        }
    }

    /// Leaving Master for Initialize or Fault: section 6.4.3 Shutdown.
    fn resign(&mut self, to: State, out: &mut Vec<Action>) {
        self.cancel_timer(out);
        out.push(Action::SendAdvert { priority: 0 });
        out.push(Action::ReleaseVips);
        self.transition(to, out);
    }

    /// Feeds one event at time `now`; returns the actions to perform in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match (self.state, event) {
            (State::Initialize, Event::Startup) => self.startup(now, &mut out),
            (State::Initialize, Event::Tracking { ok: false }) => {
                self.transition(State::Fault, &mut out)
            }
            (State::Fault, Event::Tracking { ok: true }) => self.startup(now, &mut out),
            (State::Fault, Event::Shutdown) => self.transition(State::Initialize, &mut out),

            // Section 6.4.2 Backup.
            (State::Backup, Event::Shutdown) => {
                self.cancel_timer(&mut out);
                self.transition(State::Initialize, &mut out);
            }
            (State::Backup, Event::Tracking { ok: false }) => {
                self.cancel_timer(&mut out);
                self.transition(State::Fault, &mut out);
            }
            (State::Backup, Event::Timer) if self.timer.is_some_and(|t| t <= now) => {
                self.become_master(now, &mut out);
            }
            (
                State::Backup,
                Event::Advert {
                    src,
                    priority,
                    max_advert_int_cs,
                },
            ) => self.backup_advert(src, priority, max_advert_int_cs, now, &mut out),

            // Section 6.4.3 Master.
            (State::Master, Event::Shutdown) => self.resign(State::Initialize, &mut out),
            (State::Master, Event::Tracking { ok: false }) => self.resign(State::Fault, &mut out),
            (State::Master, Event::Timer) if self.timer.is_some_and(|t| t <= now) => {
                out.push(Action::SendAdvert {
                    priority: self.params.priority,
                });
                self.set_timer(now + self.advert_interval(), &mut out);
            }
            (
                State::Master,
                Event::Advert {
                    src,
                    priority,
                    max_advert_int_cs,
                },
            ) => self.master_advert(src, priority, max_advert_int_cs, now, &mut out),

            // Everything else is a no-op: adverts in Initialize/Fault, repeated
            // Startup, tracking that did not change the fault verdict, stale timers.
            _ => {}
        }
        out
    }

    fn backup_advert(
        &mut self,
        src: IpAddr,
        priority: u8,
        max_advert_int_cs: u16,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if priority == 0 {
            // The master is stopping: take over after Skew_Time only, so the
            // highest-priority backup (smallest skew) wins the race.
            self.set_timer(now + self.skew_time(), out);
            return;
        }
        let lower = priority < self.params.priority;
        let mut accept = !self.params.preempt || !lower;
        let mut deadline = None;
        if !accept && !self.params.preempt_delay.is_zero() {
            let at = *self
                .preempt_at
                .get_or_insert(now + self.params.preempt_delay);
            if now < at {
                accept = true;
                deadline = Some(at);
            }
        }
        if !lower {
            // A master we would not preempt anyway: forget any pending preemption.
            self.preempt_at = None;
        }
        if accept {
            self.master_adver_interval_cs = max_advert_int_cs;
            self.master = Some(src);
            let down = now + self.master_down_interval();
            // While a preemption is pending, fire at the earlier of the two: the end
            // of the delay (preempt) or the master going silent (take over).
            self.set_timer(deadline.map_or(down, |d| d.min(down)), out);
        }
        // else: preempt on and the sender is lower: discard, so the
        // Master_Down_Timer runs out and we take over (section 6.4.2).
    }

    fn master_advert(
        &mut self,
        src: IpAddr,
        priority: u8,
        max_advert_int_cs: u16,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if self.params.priority == 255 {
            // Section 7.1: an address owner discards adverts for its VRID; it is
            // master by definition.
            return;
        }
        if priority == 0 {
            // Another master is stopping (split brain healing, or a stale peer):
            // assert ourselves at once so backups do not take over after skew.
            out.push(Action::SendAdvert {
                priority: self.params.priority,
            });
            self.set_timer(now + self.advert_interval(), out);
            return;
        }
        let yields = priority > self.params.priority
            || (priority == self.params.priority && ip_greater(src, self.params.primary));
        if yields {
            self.master_adver_interval_cs = max_advert_int_cs;
            self.master = Some(src);
            out.push(Action::ReleaseVips);
            let down = now + self.master_down_interval();
            self.set_timer(down, out);
            self.transition(State::Backup, out);
        }
        // else discard: we keep the role; our next advert tells the other master.
    }
}

/// "The primary IPvX Address of the sender of the ADVERTISEMENT is greater than the
/// local primary IPvX Address", compared as unsigned integers in network order.
fn ip_greater(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => u32::from(a) > u32::from(b),
        (IpAddr::V6(a), IpAddr::V6(b)) => u128::from(a) > u128::from(b),
        // Families never mix on one instance; treat as not greater.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
    const LOW_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const HIGH_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 3));

    fn params(priority: u8) -> Params {
        Params {
            priority,
            advert_interval_cs: 100,
            preempt: true,
            preempt_delay: Duration::ZERO,
            primary: ME,
        }
    }

    fn advert(src: IpAddr, priority: u8) -> Event {
        Event::Advert {
            src,
            priority,
            max_advert_int_cs: 100,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn backup(priority: u8, t0: Instant) -> Machine {
        let mut m = Machine::new(params(priority));
        m.handle(Event::Startup, t0);
        assert_eq!(m.state(), State::Backup);
        m
    }

    fn master(priority: u8, t0: Instant) -> Machine {
        let mut m = backup(priority, t0);
        let t = m.timer().unwrap();
        m.handle(Event::Timer, t);
        assert_eq!(m.state(), State::Master);
        m
    }

    #[test]
    fn timing_formulas_match_section_6_1() {
        let m = Machine::new(params(100));
        // (256 - 100) * 1 s / 256 = 609.375 ms
        assert_eq!(m.skew_time(), Duration::from_micros(609_375));
        assert_eq!(
            m.master_down_interval(),
            ms(3000) + Duration::from_micros(609_375)
        );
        let m = Machine::new(params(255));
        assert_eq!(m.skew_time(), Duration::from_micros(3_906)); // 1/256 s, truncated
        let m = Machine::new(params(1));
        assert_eq!(m.skew_time(), Duration::from_micros(996_093));
        let mut p = params(200);
        p.advert_interval_cs = 1;
        // Would be 0 in whole centiseconds; 56/256 * 10 ms in microseconds.
        assert_eq!(Machine::new(p).skew_time(), Duration::from_micros(2_187));
    }

    #[test]
    fn startup_non_owner_goes_backup_with_master_down_timer() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(100));
        let acts = m.handle(Event::Startup, t0);
        let mdi = m.master_down_interval();
        assert_eq!(
            acts,
            vec![
                Action::SetTimer(t0 + mdi),
                Action::Transition {
                    from: State::Initialize,
                    to: State::Backup
                }
            ]
        );
        assert_eq!(m.master(), None);
    }

    #[test]
    fn startup_owner_goes_master_at_once() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(255));
        let acts = m.handle(Event::Startup, t0);
        assert_eq!(
            acts,
            vec![
                Action::SendAdvert { priority: 255 },
                Action::TakeVips,
                Action::SetTimer(t0 + ms(1000)),
                Action::Transition {
                    from: State::Initialize,
                    to: State::Master
                }
            ]
        );
        assert_eq!(m.master(), Some(ME));
    }

    #[test]
    fn master_down_timer_makes_master() {
        let t0 = Instant::now();
        let mut m = backup(100, t0);
        let due = m.timer().unwrap();
        // Early or stale timer events are ignored.
        assert!(m.handle(Event::Timer, due - ms(1)).is_empty());
        let acts = m.handle(Event::Timer, due);
        assert_eq!(
            acts,
            vec![
                Action::SendAdvert { priority: 100 },
                Action::TakeVips,
                Action::SetTimer(due + ms(1000)),
                Action::Transition {
                    from: State::Backup,
                    to: State::Master
                }
            ]
        );
    }

    #[test]
    fn backup_learns_master_adver_interval() {
        let t0 = Instant::now();
        let mut m = backup(100, t0);
        let acts = m.handle(
            Event::Advert {
                src: HIGH_IP,
                priority: 200,
                max_advert_int_cs: 10,
            },
            t0,
        );
        assert_eq!(m.master_adver_interval(), ms(100));
        // 3 * 100 ms + (156 * 100 ms / 256 = 60.9375 ms)
        let mdi = ms(300) + Duration::from_micros(60_937);
        assert_eq!(m.master_down_interval(), mdi);
        assert_eq!(acts, vec![Action::SetTimer(t0 + mdi)]);
        assert_eq!(m.master(), Some(HIGH_IP));
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn backup_on_priority_zero_takes_over_after_skew() {
        let t0 = Instant::now();
        let mut m = backup(100, t0);
        m.handle(advert(HIGH_IP, 200), t0);
        let t1 = t0 + ms(500);
        let acts = m.handle(advert(HIGH_IP, 0), t1);
        assert_eq!(acts, vec![Action::SetTimer(t1 + m.skew_time())]);
        let acts = m.handle(Event::Timer, t1 + m.skew_time());
        assert!(acts.contains(&Action::TakeVips));
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn backup_with_preempt_discards_lower_priority() {
        let t0 = Instant::now();
        let mut m = backup(100, t0);
        let before = m.timer();
        assert!(m.handle(advert(LOW_IP, 50), t0 + ms(100)).is_empty());
        assert_eq!(m.timer(), before);
        // ...so the timer runs out and we preempt.
        m.handle(Event::Timer, before.unwrap());
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn backup_without_preempt_accepts_lower_priority() {
        let t0 = Instant::now();
        let mut p = params(100);
        p.preempt = false;
        let mut m = Machine::new(p);
        m.handle(Event::Startup, t0);
        let t1 = t0 + ms(2000);
        let acts = m.handle(advert(LOW_IP, 50), t1);
        assert_eq!(acts, vec![Action::SetTimer(t1 + m.master_down_interval())]);
        assert_eq!(m.master(), Some(LOW_IP));
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn backup_accepts_equal_priority_regardless_of_address() {
        // Section 6.4.2: ">= local Priority" is accepted; the address tie-break is
        // only done by a Master.
        let t0 = Instant::now();
        let mut m = backup(100, t0);
        let acts = m.handle(advert(LOW_IP, 100), t0);
        assert_eq!(acts.len(), 1);
        assert!(matches!(acts[0], Action::SetTimer(_)));
    }

    #[test]
    fn preempt_delay_defers_preemption_but_not_takeover() {
        let t0 = Instant::now();
        let mut p = params(100);
        p.preempt_delay = ms(5000);
        let mut m = Machine::new(p);
        m.handle(Event::Startup, t0);
        // Lower master seen: accepted during the delay, timer at min(delay end, MDI).
        let acts = m.handle(advert(LOW_IP, 50), t0);
        let mdi = m.master_down_interval();
        assert_eq!(acts, vec![Action::SetTimer(t0 + mdi)]);
        // Adverts keep coming; near the end of the delay the timer is the delay end.
        let t1 = t0 + ms(4000);
        let acts = m.handle(advert(LOW_IP, 50), t1);
        assert_eq!(acts, vec![Action::SetTimer(t0 + ms(5000))]);
        // After the delay, the lower master's adverts are discarded again...
        assert!(m.handle(advert(LOW_IP, 50), t0 + ms(5000)).is_empty());
        // ...and the timer firing preempts.
        m.handle(Event::Timer, t0 + ms(5000));
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn preempt_delay_still_takes_over_dead_master() {
        let t0 = Instant::now();
        let mut p = params(100);
        p.preempt_delay = ms(60_000);
        let mut m = Machine::new(p);
        m.handle(Event::Startup, t0);
        m.handle(advert(LOW_IP, 50), t0);
        let due = m.timer().unwrap();
        assert_eq!(due, t0 + m.master_down_interval());
        m.handle(Event::Timer, due);
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn preempt_delay_restarts_after_higher_master() {
        let t0 = Instant::now();
        let mut p = params(100);
        p.preempt_delay = ms(1000);
        let mut m = Machine::new(p);
        m.handle(Event::Startup, t0);
        m.handle(advert(LOW_IP, 50), t0);
        m.handle(advert(HIGH_IP, 150), t0 + ms(500));
        // A new lower master later gets a fresh full delay.
        let t2 = t0 + ms(3000);
        let acts = m.handle(advert(LOW_IP, 50), t2);
        assert_eq!(acts, vec![Action::SetTimer(t2 + ms(1000))]);
    }

    #[test]
    fn backup_shutdown_and_fault() {
        let t0 = Instant::now();
        let mut m = backup(100, t0);
        assert_eq!(
            m.handle(Event::Shutdown, t0),
            vec![
                Action::CancelTimer,
                Action::Transition {
                    from: State::Backup,
                    to: State::Initialize
                }
            ]
        );
        let mut m = backup(100, t0);
        assert_eq!(
            m.handle(Event::Tracking { ok: false }, t0),
            vec![
                Action::CancelTimer,
                Action::Transition {
                    from: State::Backup,
                    to: State::Fault
                }
            ]
        );
        assert_eq!(m.timer(), None);
    }

    #[test]
    fn master_advert_timer_sends_and_rearms() {
        let t0 = Instant::now();
        let mut m = master(100, t0);
        let due = m.timer().unwrap();
        assert_eq!(
            m.handle(Event::Timer, due),
            vec![
                Action::SendAdvert { priority: 100 },
                Action::SetTimer(due + ms(1000))
            ]
        );
    }

    #[test]
    fn master_shutdown_sends_priority_zero_and_releases() {
        let t0 = Instant::now();
        let mut m = master(100, t0);
        assert_eq!(
            m.handle(Event::Shutdown, t0),
            vec![
                Action::CancelTimer,
                Action::SendAdvert { priority: 0 },
                Action::ReleaseVips,
                Action::Transition {
                    from: State::Master,
                    to: State::Initialize
                }
            ]
        );
        assert_eq!(m.master(), None);
    }

    #[test]
    fn master_fault_resigns_like_shutdown() {
        let t0 = Instant::now();
        let mut m = master(100, t0);
        let acts = m.handle(Event::Tracking { ok: false }, t0);
        assert_eq!(acts[1], Action::SendAdvert { priority: 0 });
        assert_eq!(acts[2], Action::ReleaseVips);
        assert_eq!(m.state(), State::Fault);
        // Silent in fault: adverts and timers do nothing.
        assert!(m.handle(advert(HIGH_IP, 200), t0).is_empty());
        assert!(m.handle(Event::Timer, t0 + ms(10_000)).is_empty());
        // Recovery starts over as Backup.
        let acts = m.handle(Event::Tracking { ok: true }, t0 + ms(1));
        assert_eq!(m.state(), State::Backup);
        assert!(matches!(acts[0], Action::SetTimer(_)));
    }

    #[test]
    fn owner_recovers_from_fault_straight_to_master() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(255));
        m.handle(Event::Tracking { ok: false }, t0);
        assert_eq!(m.state(), State::Fault);
        m.handle(Event::Tracking { ok: true }, t0);
        assert_eq!(m.state(), State::Master);
        assert_eq!(
            m.handle(Event::Shutdown, t0)[1],
            Action::SendAdvert { priority: 0 }
        );
    }

    #[test]
    fn master_answers_priority_zero_at_once() {
        let t0 = Instant::now();
        let mut m = master(100, t0);
        let t1 = t0 + ms(10_000);
        assert_eq!(
            m.handle(advert(HIGH_IP, 0), t1),
            vec![
                Action::SendAdvert { priority: 100 },
                Action::SetTimer(t1 + ms(1000))
            ]
        );
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn master_yields_to_higher_priority() {
        let t0 = Instant::now();
        let mut m = master(100, t0);
        let t1 = t0 + ms(10_000);
        let acts = m.handle(
            Event::Advert {
                src: LOW_IP,
                priority: 101,
                max_advert_int_cs: 50,
            },
            t1,
        );
        assert_eq!(m.master_adver_interval(), ms(500));
        assert_eq!(
            acts,
            vec![
                Action::ReleaseVips,
                Action::SetTimer(t1 + m.master_down_interval()),
                Action::Transition {
                    from: State::Master,
                    to: State::Backup
                }
            ]
        );
        assert_eq!(m.master(), Some(LOW_IP));
    }

    #[test]
    fn master_equal_priority_tie_break_by_address() {
        let t0 = Instant::now();
        let mut m = master(100, t0);
        // Lower address, same priority: we stay.
        assert!(m.handle(advert(LOW_IP, 100), t0).is_empty());
        // Lower priority: we stay.
        assert!(m.handle(advert(HIGH_IP, 99), t0).is_empty());
        assert_eq!(m.state(), State::Master);
        // Higher address, same priority: we yield.
        m.handle(advert(HIGH_IP, 100), t0);
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn ipv6_tie_break_compares_whole_address() {
        assert!(ip_greater(
            "fe80::2".parse().unwrap(),
            "fe80::1".parse().unwrap()
        ));
        assert!(!ip_greater(
            "fe80::1:0".parse().unwrap(),
            "fe80::2:0".parse().unwrap()
        ));
        assert!(ip_greater(
            "10.0.1.0".parse().unwrap(),
            "10.0.0.255".parse().unwrap()
        ));
    }

    #[test]
    fn owner_master_ignores_adverts() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(255));
        m.handle(Event::Startup, t0);
        assert!(m.handle(advert(HIGH_IP, 255), t0).is_empty());
        assert!(m.handle(advert(HIGH_IP, 0), t0).is_empty());
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn initialize_and_fault_edges() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(100));
        // Adverts, timers and a tracking "ok" before Startup do nothing.
        assert!(m.handle(advert(HIGH_IP, 200), t0).is_empty());
        assert!(m.handle(Event::Timer, t0).is_empty());
        assert!(m.handle(Event::Tracking { ok: true }, t0).is_empty());
        assert!(m.handle(Event::Shutdown, t0).is_empty());
        // Fault before Startup.
        m.handle(Event::Tracking { ok: false }, t0);
        assert_eq!(m.state(), State::Fault);
        assert!(m.handle(Event::Tracking { ok: false }, t0).is_empty());
        assert!(m.handle(Event::Startup, t0).is_empty());
        assert_eq!(
            m.handle(Event::Shutdown, t0),
            vec![Action::Transition {
                from: State::Fault,
                to: State::Initialize
            }]
        );
        // Startup twice is idempotent.
        m.handle(Event::Startup, t0);
        assert!(m.handle(Event::Startup, t0).is_empty());
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn split_brain_heals_to_exactly_one_master() {
        // Two masters that could not hear each other start hearing each other.
        let t0 = Instant::now();
        let mut a = master(100, t0);
        let mut b = {
            let mut p = params(100);
            p.primary = HIGH_IP;
            let mut m = Machine::new(p);
            m.handle(Event::Startup, t0);
            m.handle(Event::Timer, m.timer().unwrap());
            m
        };
        a.handle(advert(HIGH_IP, 100), t0);
        b.handle(advert(ME, 100), t0);
        assert_eq!(a.state(), State::Backup);
        assert_eq!(b.state(), State::Master);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn event() -> impl Strategy<Value = Event> {
            let src = prop_oneof![Just(LOW_IP), Just(HIGH_IP)];
            prop_oneof![
                Just(Event::Startup),
                Just(Event::Shutdown),
                Just(Event::Timer),
                any::<bool>().prop_map(|ok| Event::Tracking { ok }),
                (src, any::<u8>(), 1u16..=4095).prop_map(|(src, priority, i)| Event::Advert {
                    src,
                    priority,
                    max_advert_int_cs: i,
                }),
            ]
        }

        proptest! {
            /// Whatever happens, the VIPs are held exactly while in Master, the timer
            /// runs exactly in Backup and Master, priority 0 goes out only when leaving
            /// Master, and every Transition reports the real from/to.
            #[test]
            fn invariants_hold(
                priority in 1u8..=255,
                preempt in any::<bool>(),
                delay_ms in prop_oneof![Just(0u64), 1u64..5000],
                steps in proptest::collection::vec((event(), 0u64..3000), 1..60),
            ) {
                let mut p = params(priority);
                p.preempt = preempt;
                p.preempt_delay = ms(delay_ms);
                let mut m = Machine::new(p);
                let mut now = Instant::now();
                let mut vips = false;
                for (ev, dt) in steps {
                    now += ms(dt);
                    // Deliver timers when due, as the runtime does.
                    let ev = match (ev, m.timer()) {
                        (Event::Timer, Some(t)) => { now = now.max(t); ev }
                        _ => ev,
                    };
                    let before = m.state();
                    for a in m.handle(ev, now) {
                        match a {
                            Action::TakeVips => { prop_assert!(!vips); vips = true; }
                            Action::ReleaseVips => { prop_assert!(vips); vips = false; }
                            Action::SendAdvert { priority: 0 } => {
                                prop_assert_eq!(before, State::Master);
                            }
                            Action::Transition { from, to } => {
                                prop_assert_eq!(from, before);
                                prop_assert_ne!(from, to);
                            }
                            _ => {}
                        }
                    }
                    prop_assert_eq!(vips, m.state() == State::Master);
                    prop_assert_eq!(
                        m.timer().is_some(),
                        matches!(m.state(), State::Backup | State::Master)
                    );
                }
            }
        }
    }
}
