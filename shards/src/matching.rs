//! One dispatch window's matching: the orders waiting for a rider, each with the available
//! riders near enough to fetch it, assigned together so that as many orders as possible get a
//! rider and, among those assignments, the total pickup distance is least. Nearest-first loses
//! exactly when riders are scarce: the rider nearest to two orders takes the first, and the
//! second gets a far one or none.
//!
//! The assignment is Kuhn-Munkres (the Hungarian algorithm, from `pathfinding`) over integer
//! costs in metres. Every order has a column of its own meaning "no rider this window", so there
//! are never more rows than columns. By default that column costs more than any real pickup, so
//! the solver first matches as many orders as it can. With a hold (`Costs::hold_m`) it costs the
//! order's hold reach instead: an order then waits for the next window rather than take a rider
//! beyond that reach, or one whose taking would push other orders' pickups out by more — matching
//! everyone at once is what makes a window send far riders when riders are scarce, while a rider
//! freed a second later is often nearer. The reach grows with the wait, so no order holds long.
//! An order's real costs are lowered by a credit for how long it has waited, so that when riders
//! are short the older order wins a tie. Costs are bounded before they reach the solver: a
//! distance that is not a finite, non-negative number leaves that rider out, and a total never
//! overflows.
//!
//! The solve is O(n²·m) for n orders and m columns; the caller bounds n per window.

use std::collections::HashMap;

use pathfinding::kuhn_munkres::kuhn_munkres_min;
use pathfinding::matrix::Matrix;
use tomato_domain::{OrderId, RiderId};

/// Pickups are never costed farther than this (metres): a search radius is at most 50 km.
const MAX_DISTANCE_M: f64 = 100_000.0;
/// The most waiting is ever worth, in metres of pickup.
const MAX_CREDIT_M: f64 = 100_000.0;
/// The most orders one solve takes; the rest wait for the next window. With the costs bounded
/// as above, the largest total stays far inside an `i64`.
pub const MAX_ORDERS: usize = 10_000;

/// A rider an order could go to, and how far the rider is from its pickup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reach {
    pub rider: RiderId,
    pub distance_m: f64,
}

/// An order waiting for a rider in this window, with the riders it could have.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    pub order: OrderId,
    /// Seconds since it became ready for a rider.
    pub waited_s: f64,
    pub riders: Vec<Reach>,
}

/// An order and the rider the window gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Matched {
    pub order: OrderId,
    pub rider: RiderId,
    pub distance_m: f64,
}

/// How waiting weighs against distance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Costs {
    /// Metres of pickup that one second of waiting is worth.
    pub credit_m_per_s: f64,
    /// An order would rather wait for the next window than take a rider farther than this many
    /// metres times (1 + the seconds it has waited); 0 (or not a positive number) never holds.
    pub hold_m: f64,
}

impl Costs {
    /// How far a rider may be for `waited_s` to be worth taking it now, in whole metres; `None`
    /// when orders never hold.
    fn hold_reach_m(self, waited_s: f64) -> Option<i64> {
        if !(self.hold_m.is_finite() && self.hold_m > 0.0) {
            return None;
        }
        let reach = self.hold_m * (1.0 + waited_s.max(0.0));
        Some(if reach.is_finite() {
            reach.min(MAX_DISTANCE_M).round() as i64
        } else {
            MAX_DISTANCE_M as i64
        })
    }
}

/// The window's assignment: each order at most one rider, each rider at most one order, as
/// many orders matched as the candidates allow (with a hold: those worth matching now), and of
/// those the least total pickup distance less the waiting credit. Orders left out wait for the
/// next window.
pub fn assign(waiting: &[Waiting], costs: Costs) -> Vec<Matched> {
    let mut columns: Vec<RiderId> = Vec::new();
    let mut column_of: HashMap<RiderId, usize> = HashMap::new();
    // Per order: column -> (cost, distance), the nearest reach of each rider kept.
    let waiting = &waiting[..waiting.len().min(MAX_ORDERS)];
    let mut reaches: Vec<HashMap<usize, (i64, f64)>> = Vec::with_capacity(waiting.len());
    // Per order: what leaving it for the next window costs, when it holds.
    let mut held: Vec<Option<i64>> = Vec::with_capacity(waiting.len());
    for order in waiting {
        let credit = credit_m(order.waited_s, costs.credit_m_per_s);
        held.push(
            costs
                .hold_reach_m(order.waited_s)
                .map(|reach| reach - credit),
        );
        let mut own: HashMap<usize, (i64, f64)> = HashMap::new();
        for reach in &order.riders {
            let Some(metres) = pickup_m(reach.distance_m) else {
                continue;
            };
            let column = *column_of.entry(reach.rider).or_insert_with(|| {
                columns.push(reach.rider);
                columns.len() - 1
            });
            let cost = metres - credit;
            own.entry(column)
                .and_modify(|best| {
                    if cost < best.0 {
                        *best = (cost, reach.distance_m);
                    }
                })
                .or_insert((cost, reach.distance_m));
        }
        reaches.push(own);
    }
    if waiting.is_empty() || columns.is_empty() {
        return Vec::new();
    }
    let riders = columns.len();
    // "No rider this window" costs more than the most that matching one more order can add to
    // the other orders' pickups, so the solver matches as many orders as it can (unless the order
    // holds, when it costs the order's reach, less than that bound); a rider the order cannot
    // have (not among its candidates) costs more than every order unmatched.
    let span = (MAX_DISTANCE_M + MAX_CREDIT_M) as i64;
    let unmatched = (waiting.len() as i64 + 1) * span;
    let forbidden = (waiting.len() as i64 + 1) * unmatched;
    let weights = Matrix::from_fn(waiting.len(), riders + waiting.len(), |(row, column)| {
        if column >= riders {
            // The order's own "no rider" column; another order's is never worth taking.
            return if column - riders == row {
                held[row].map_or(unmatched, |left| left.min(unmatched))
            } else {
                forbidden
            };
        }
        reaches[row]
            .get(&column)
            .map_or(forbidden, |&(cost, _)| cost)
    });
    let (_, assigned) = kuhn_munkres_min(&weights);
    assigned
        .into_iter()
        .enumerate()
        .filter_map(|(row, column)| {
            let &(_, distance_m) = reaches[row].get(&column)?;
            Some(Matched {
                order: waiting[row].order,
                rider: columns[column],
                distance_m,
            })
        })
        .collect()
}

/// Nearest-first, for a window whose solve ran past its budget: each order in turn (the
/// caller lists them oldest first) takes its nearest rider not taken yet (within its hold
/// reach, when it holds).
pub fn nearest_first(waiting: &[Waiting], costs: Costs) -> Vec<Matched> {
    let mut taken = std::collections::HashSet::new();
    let mut matched = Vec::new();
    for order in waiting {
        let reach = costs.hold_reach_m(order.waited_s);
        let nearest = order
            .riders
            .iter()
            .filter(|r| {
                pickup_m(r.distance_m).is_some_and(|m| reach.is_none_or(|reach| m <= reach))
                    && !taken.contains(&r.rider)
            })
            .min_by(|a, b| a.distance_m.total_cmp(&b.distance_m));
        if let Some(reach) = nearest {
            taken.insert(reach.rider);
            matched.push(Matched {
                order: order.order,
                rider: reach.rider,
                distance_m: reach.distance_m,
            });
        }
    }
    matched
}

/// A pickup distance in whole metres, or `None` for one that is not a finite, non-negative
/// number.
fn pickup_m(distance_m: f64) -> Option<i64> {
    (distance_m.is_finite() && distance_m >= 0.0)
        .then(|| distance_m.min(MAX_DISTANCE_M).round() as i64)
}

/// What an order's wait is worth, in whole metres, bounded.
fn credit_m(waited_s: f64, per_s: f64) -> i64 {
    let credit = waited_s * per_s;
    if credit.is_finite() && credit > 0.0 {
        credit.min(MAX_CREDIT_M).round() as i64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn order(n: u128) -> OrderId {
        OrderId::from(uuid::Uuid::from_u128(n))
    }

    fn rider(n: u128) -> RiderId {
        RiderId::from(uuid::Uuid::from_u128(1_000 + n))
    }

    const NO_CREDIT: Costs = Costs {
        credit_m_per_s: 0.0,
        hold_m: 0.0,
    };

    #[test]
    fn nearest_first_serves_the_oldest_first_and_never_a_rider_twice() {
        let reach = |rider_n, distance_m| Reach {
            rider: rider(rider_n),
            distance_m,
        };
        let waiting = [
            Waiting {
                order: order(1),
                waited_s: 9.0,
                riders: vec![reach(1, 100.0), reach(2, f64::NAN), reach(3, 300.0)],
            },
            Waiting {
                order: order(2),
                waited_s: 1.0,
                riders: vec![reach(1, 50.0), reach(2, f64::INFINITY)],
            },
            Waiting {
                order: order(3),
                waited_s: 0.0,
                riders: vec![reach(3, 10.0)],
            },
        ];
        let matched = nearest_first(&waiting, NO_CREDIT);
        assert_eq!(
            matched,
            [
                Matched {
                    order: order(1),
                    rider: rider(1),
                    distance_m: 100.0,
                },
                Matched {
                    order: order(3),
                    rider: rider(3),
                    distance_m: 10.0,
                }
            ]
        );
    }

    #[test]
    fn the_rider_nearest_to_both_orders_goes_where_the_total_is_least() {
        // Rider 1 is 100 m from order 1 and 200 m from order 2; rider 2 is 300 m from order 1
        // and 5 km from order 2. Nearest-first, order 1 first, gives rider 1 to order 1 and
        // leaves order 2 rider 2: 5.1 km of pickups. The least total is 500 m.
        let waiting = [
            Waiting {
                order: order(1),
                waited_s: 0.0,
                riders: vec![
                    Reach {
                        rider: rider(1),
                        distance_m: 100.0,
                    },
                    Reach {
                        rider: rider(2),
                        distance_m: 300.0,
                    },
                ],
            },
            Waiting {
                order: order(2),
                waited_s: 0.0,
                riders: vec![
                    Reach {
                        rider: rider(1),
                        distance_m: 200.0,
                    },
                    Reach {
                        rider: rider(2),
                        distance_m: 5_000.0,
                    },
                ],
            },
        ];
        let mut matched = assign(&waiting, NO_CREDIT);
        matched.sort_by_key(|m| m.order);
        assert_eq!(
            matched,
            vec![
                Matched {
                    order: order(1),
                    rider: rider(2),
                    distance_m: 300.0
                },
                Matched {
                    order: order(2),
                    rider: rider(1),
                    distance_m: 200.0
                },
            ]
        );
    }

    #[test]
    fn scarce_riders_go_to_as_many_orders_as_they_can_and_the_oldest_wins_a_tie() {
        let one_rider = |n: u128, waited_s: f64| Waiting {
            order: order(n),
            waited_s,
            riders: vec![Reach {
                rider: rider(1),
                distance_m: 500.0,
            }],
        };
        let matched = assign(
            &[one_rider(1, 5.0), one_rider(2, 60.0), one_rider(3, 30.0)],
            Costs {
                credit_m_per_s: 1.0,
                hold_m: 0.0,
            },
        );
        assert_eq!(matched.len(), 1);
        assert_eq!(matched[0].order, order(2), "the order that waited longest");

        // Two riders, three orders: two matched, each rider once.
        let mut waiting = vec![one_rider(1, 0.0), one_rider(2, 0.0), one_rider(3, 0.0)];
        for order in &mut waiting {
            order.riders.push(Reach {
                rider: rider(2),
                distance_m: 800.0,
            });
        }
        let matched = assign(&waiting, NO_CREDIT);
        assert_eq!(matched.len(), 2);
        assert_ne!(matched[0].rider, matched[1].rider);
    }

    #[test]
    fn one_more_order_matched_outweighs_any_pickups_it_costs_the_others() {
        // Order k reaches rider k at 0 m and rider k+1 at 100 km; one more order reaches only
        // rider 0. Matching it moves every other order to its far rider, 150 x 100 km, and the
        // window still matches all 151.
        let mut waiting: Vec<Waiting> = (0..150)
            .map(|k| Waiting {
                order: order(k),
                waited_s: 0.0,
                riders: vec![
                    Reach {
                        rider: rider(k),
                        distance_m: 0.0,
                    },
                    Reach {
                        rider: rider(k + 1),
                        distance_m: 100_000.0,
                    },
                ],
            })
            .collect();
        waiting.push(Waiting {
            order: order(150),
            waited_s: 0.0,
            riders: vec![Reach {
                rider: rider(0),
                distance_m: 0.0,
            }],
        });
        assert_eq!(assign(&waiting, NO_CREDIT).len(), 151);
    }

    #[test]
    fn empty_windows_and_orders_without_riders_match_nothing() {
        assert!(assign(&[], NO_CREDIT).is_empty());
        let lonely = Waiting {
            order: order(1),
            waited_s: 10.0,
            riders: Vec::new(),
        };
        assert!(assign(std::slice::from_ref(&lonely), NO_CREDIT).is_empty());
        // An order nobody can reach does not keep another from its rider.
        let reachable = Waiting {
            order: order(2),
            waited_s: 0.0,
            riders: vec![Reach {
                rider: rider(1),
                distance_m: 50.0,
            }],
        };
        let matched = assign(&[lonely, reachable], NO_CREDIT);
        assert_eq!(matched.len(), 1);
        assert_eq!(matched[0].order, order(2));
    }

    #[test]
    fn an_order_that_holds_waits_for_a_nearer_rider_until_its_reach_grows() {
        let far = |waited_s| Waiting {
            order: order(1),
            waited_s,
            riders: vec![Reach {
                rider: rider(1),
                distance_m: 800.0,
            }],
        };
        let hold = Costs {
            credit_m_per_s: 0.0,
            hold_m: 500.0,
        };
        // Fresh, its reach is 500 m: the rider 800 m away is left for a nearer one.
        assert!(assign(&[far(0.0)], hold).is_empty());
        assert!(nearest_first(&[far(0.0)], hold).is_empty());
        // After a second its reach is 1 km, and without a hold it takes anyone.
        assert_eq!(assign(&[far(1.0)], hold).len(), 1);
        assert_eq!(nearest_first(&[far(1.0)], hold).len(), 1);
        assert_eq!(assign(&[far(0.0)], NO_CREDIT).len(), 1);
        // A hold that is not a positive number never holds.
        for hold_m in [f64::NAN, -1.0, f64::INFINITY] {
            let costs = Costs {
                credit_m_per_s: 0.0,
                hold_m,
            };
            assert_eq!(assign(&[far(f64::INFINITY)], costs).len(), 1, "{hold_m}");
        }
    }

    #[test]
    fn a_holding_window_does_not_send_a_far_rider_to_match_one_more_order() {
        // Rider 1 is 100 m from order A and 150 m from order B; rider 2 is 3 km from A only.
        // Matching both sends rider 2 3 km; with a 1 km hold, A takes rider 1 and B waits.
        let waiting = [
            Waiting {
                order: order(1),
                waited_s: 0.0,
                riders: vec![
                    Reach {
                        rider: rider(1),
                        distance_m: 100.0,
                    },
                    Reach {
                        rider: rider(2),
                        distance_m: 3_000.0,
                    },
                ],
            },
            Waiting {
                order: order(2),
                waited_s: 0.0,
                riders: vec![Reach {
                    rider: rider(1),
                    distance_m: 150.0,
                }],
            },
        ];
        assert_eq!(assign(&waiting, NO_CREDIT).len(), 2);
        let held = assign(
            &waiting,
            Costs {
                credit_m_per_s: 0.0,
                hold_m: 1_000.0,
            },
        );
        assert_eq!(
            held,
            [Matched {
                order: order(1),
                rider: rider(1),
                distance_m: 100.0
            }]
        );
    }

    #[test]
    fn distances_that_are_not_numbers_are_left_out_and_huge_ones_do_not_overflow() {
        let waiting = [Waiting {
            order: order(1),
            waited_s: f64::INFINITY,
            riders: vec![
                Reach {
                    rider: rider(1),
                    distance_m: f64::NAN,
                },
                Reach {
                    rider: rider(2),
                    distance_m: f64::INFINITY,
                },
                Reach {
                    rider: rider(3),
                    distance_m: -5.0,
                },
                Reach {
                    rider: rider(4),
                    distance_m: 1e300,
                },
            ],
        }];
        let matched = assign(
            &waiting,
            Costs {
                credit_m_per_s: f64::MAX,
                hold_m: 0.0,
            },
        );
        assert_eq!(matched.len(), 1);
        assert_eq!(matched[0].rider, rider(4));
        // The same rider twice for one order: the nearer reach counts.
        let twice = [Waiting {
            order: order(1),
            waited_s: 0.0,
            riders: vec![
                Reach {
                    rider: rider(1),
                    distance_m: 900.0,
                },
                Reach {
                    rider: rider(1),
                    distance_m: 100.0,
                },
            ],
        }];
        assert_eq!(assign(&twice, NO_CREDIT)[0].distance_m, 100.0);
    }

    /// Every way to give orders distinct riders (or none): the most orders matched, then the
    /// least cost, by trying them all.
    fn brute_force(costs: &[Vec<Option<i64>>], riders: usize) -> (usize, i64) {
        fn go(
            row: usize,
            costs: &[Vec<Option<i64>>],
            taken: &mut Vec<bool>,
            matched: usize,
            cost: i64,
            best: &mut (usize, i64),
        ) {
            if row == costs.len() {
                if matched > best.0 || (matched == best.0 && cost < best.1) {
                    *best = (matched, cost);
                }
                return;
            }
            go(row + 1, costs, taken, matched, cost, best);
            for (column, reach) in costs[row].iter().enumerate() {
                if let Some(c) = reach
                    && !taken[column]
                {
                    taken[column] = true;
                    go(row + 1, costs, taken, matched + 1, cost + c, best);
                    taken[column] = false;
                }
            }
        }
        let mut best = (0, i64::MAX);
        go(0, costs, &mut vec![false; riders], 0, 0, &mut best);
        if best.0 == 0 {
            best.1 = 0;
        }
        best
    }

    /// The least total over every way to give orders distinct riders, an order left out costing
    /// its `held` amount, by trying them all.
    fn brute_force_held(costs: &[Vec<Option<i64>>], riders: usize, held: &[i64]) -> i64 {
        fn go(row: usize, costs: &[Vec<Option<i64>>], held: &[i64], taken: &mut Vec<bool>) -> i64 {
            if row == costs.len() {
                return 0;
            }
            let mut best = held[row] + go(row + 1, costs, held, taken);
            for (column, reach) in costs[row].iter().enumerate() {
                if let Some(c) = reach
                    && !taken[column]
                {
                    taken[column] = true;
                    best = best.min(c + go(row + 1, costs, held, taken));
                    taken[column] = false;
                }
            }
            best
        }
        go(0, costs, held, &mut vec![false; riders])
    }

    /// A window from a grid of distances (order i, rider j; `None` out of reach) and waits.
    fn window_of(grid: &[Vec<Option<u32>>], waits: &[u32]) -> Vec<Waiting> {
        grid.iter()
            .enumerate()
            .map(|(i, row)| Waiting {
                order: order(i as u128),
                waited_s: f64::from(waits[i]),
                riders: row
                    .iter()
                    .enumerate()
                    .filter_map(|(j, d)| {
                        d.map(|d| Reach {
                            rider: rider(j as u128),
                            distance_m: f64::from(d),
                        })
                    })
                    .collect(),
            })
            .collect()
    }

    proptest! {
        #[test]
        fn a_holding_window_reaches_the_least_total_of_brute_force(
            grid in prop::collection::vec(
                prop::collection::vec(prop::option::of(0u32..5_000), 1..6),
                0..6,
            ),
            waits in prop::collection::vec(0u32..4, 6),
        ) {
            let riders = grid.iter().map(Vec::len).max().unwrap_or(0);
            let costs = Costs { credit_m_per_s: 0.0, hold_m: 1_000.0 };
            let waiting = window_of(&grid, &waits);
            let full: Vec<Vec<Option<i64>>> = grid
                .iter()
                .map(|row| {
                    let mut full: Vec<Option<i64>> =
                        row.iter().map(|d| d.map(i64::from)).collect();
                    full.resize(riders, None);
                    full
                })
                .collect();
            let held: Vec<i64> = (0..grid.len()).map(|i| 1_000 * (1 + i64::from(waits[i]))).collect();
            let matched = assign(&waiting, costs);
            let mut total: i64 = held.iter().sum();
            for m in &matched {
                let i = waiting.iter().position(|w| w.order == m.order).expect("an order asked");
                total += m.distance_m as i64 - held[i];
            }
            prop_assert_eq!(total, brute_force_held(&full, riders, &held));
            let riders_used: std::collections::HashSet<_> = matched.iter().map(|m| m.rider).collect();
            prop_assert_eq!(riders_used.len(), matched.len());
        }

        #[test]
        fn the_assignment_matches_as_many_as_brute_force_at_the_same_least_cost(
            grid in prop::collection::vec(
                prop::collection::vec(prop::option::of(0u32..5_000), 1..6),
                0..6,
            ),
            waits in prop::collection::vec(0u32..120, 6),
        ) {
            let riders = grid.iter().map(Vec::len).max().unwrap_or(0);
            let costs = Costs { credit_m_per_s: 2.0, hold_m: 0.0 };
            let waiting = window_of(&grid, &waits);
            let credited: Vec<Vec<Option<i64>>> = grid
                .iter()
                .enumerate()
                .map(|(i, row)| {
                    let mut full: Vec<Option<i64>> = row
                        .iter()
                        .map(|d| d.map(|d| i64::from(d) - 2 * i64::from(waits[i])))
                        .collect();
                    full.resize(riders, None);
                    full
                })
                .collect();
            let matched = assign(&waiting, costs);
            let expected = brute_force(&credited, riders);
            let cost: i64 = matched
                .iter()
                .map(|m| {
                    let i = waiting.iter().position(|w| w.order == m.order).expect("an order asked");
                    m.distance_m as i64 - 2 * i64::from(waits[i])
                })
                .sum();
            prop_assert_eq!((matched.len(), cost), expected);
            // Each order and each rider at most once, and only riders the order could have.
            let orders: std::collections::HashSet<_> = matched.iter().map(|m| m.order).collect();
            let riders_used: std::collections::HashSet<_> = matched.iter().map(|m| m.rider).collect();
            prop_assert_eq!(orders.len(), matched.len());
            prop_assert_eq!(riders_used.len(), matched.len());
            for m in &matched {
                let asked = waiting.iter().find(|w| w.order == m.order).expect("asked");
                prop_assert!(asked.riders.iter().any(|r| r.rider == m.rider && r.distance_m == m.distance_m));
            }
        }
    }
}
