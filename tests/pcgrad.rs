//! PCGrad on the Gram matrix (`dgs::surgery::solve::pcgrad`): against the literal sequential
//! algorithm, on hand-computed Gram matrices, and its seeded visit order.

mod common;

use common::assert_passed;
use dgs::surgery::solve::{self, pcgrad_visit_order};
use dgs::surgery::verify::check_pcgrad;
use dgs::surgery::{Element, Gram, HostBackend, Reduction};

fn pcgrad_equals_sequential<B: HostBackend>(b: &B) {
    for_each_dtype!(T => {
        for seed in 0..12u64 {
            let tasks = 2 + (seed as usize % 5);
            let lens = [1 + (seed as usize * 37) % 300, 65, 1];
            for reduction in [Reduction::Sum, Reduction::Mean] {
                let r = check_pcgrad::<T, B>(b, &lens, tasks, reduction, seed).unwrap();
                assert_passed(&r, &format!("{} pcgrad tasks={tasks} {reduction:?} seed {seed}", T::DTYPE));
            }
        }
    });
}

backend_tests!(pcgrad_equals_sequential);

#[test]
fn pcgrad_on_a_hand_computed_gram() {
    // g0 = (1, 0), g1 = (-1, 1) conflict (g0·g1 = -1). g0' = g0 + ½·g1 and g1' = g1 + g0, so
    // g0' + g1' = 2·g0 + 1.5·g1 = (½, 3/2).
    let g = Gram::from_row_major(2, vec![1.0, -1.0, -1.0, 2.0]).unwrap();
    let plan = solve::pcgrad(&g, 0, Reduction::Sum).unwrap();
    assert_eq!(plan.coefficients, vec![1.0, 0.5, 1.0, 1.0]);
    assert_eq!(plan.weights, vec![2.0, 1.5]);
    let mean = solve::pcgrad(&g, 0, Reduction::Mean).unwrap();
    assert_eq!(mean.weights, vec![1.0, 0.75]);
}

#[test]
fn pcgrad_leaves_agreeing_and_zero_tasks_alone() {
    let g = Gram::from_row_major(3, vec![1.0, 0.5, 0.0, 0.5, 1.0, 0.0, 0.0, 0.0, 0.0]).unwrap();
    let plan = solve::pcgrad(&g, 3, Reduction::Sum).unwrap();
    assert_eq!(plan.weights, vec![1.0, 1.0, 1.0]);
    assert!(
        solve::pcgrad(&Gram::zeros(0), 0, Reduction::Mean)
            .unwrap()
            .weights
            .is_empty()
    );
}

#[test]
fn visit_order_is_a_seeded_permutation_of_the_others() {
    for tasks in 1..8 {
        for task in 0..tasks {
            let mut o = pcgrad_visit_order(99, tasks, task);
            assert_eq!(o, pcgrad_visit_order(99, tasks, task));
            o.sort_unstable();
            let others: Vec<usize> = (0..tasks).filter(|&j| j != task).collect();
            assert_eq!(o, others);
        }
    }
    let orders: std::collections::HashSet<Vec<usize>> =
        (0..50).map(|s| pcgrad_visit_order(s, 6, 0)).collect();
    assert!(orders.len() > 20, "seeds should give different orders");
}
