//! A UniC corrector for the MR Sampler, data form (Zhao et al., "UniPC: a unified
//! predictor-corrector framework for fast sampling of diffusion models", 2023), applied in the
//! μ-shifted frame `y = x − μ` (`docs/math.md` §4.1).
//!
//! After the network is evaluated at the predicted state `x_t`, its output `m_t` is used once
//! more to recompute `x_t` from `x_s` with one extra point in the Taylor fit. The corrected state
//! feeds the next step; the network is not called again, so the NFE is unchanged.

use super::Node;
use super::phi::phi;

/// Solves the small dense system `a·x = b` (Gaussian elimination with partial pivoting).
#[allow(clippy::needless_range_loop)] // row operations on a small dense matrix
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, piv);
        b.swap(col, piv);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            for k in col..n {
                a[row][k] -= f * a[col][k];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    x
}

/// The corrected state `x_t = a·x_s + Σ w[i]·m_i + c_μ·μ` of UniC of order `order` (≥ 1; it
/// uses `order − 1` outputs before `s` plus `m_t`), data form, `B(h) = e^{−h} − 1` ("bh2").
///
/// `nodes[0]` is `s`, `nodes[1..]` the earlier nodes; the returned weights are on
/// `[m_t, m_s, m_{s−1}, m_{s−2}]` and the tuple is `(a, w, c_μ)`.
///
/// # Panics
/// If `order` is 0 or above 3, or `nodes` holds fewer than `order` entries.
pub(crate) fn unic_corrected_state(
    order: usize,
    target: Node,
    nodes: &[Node],
) -> (f64, [f64; 4], f64) {
    assert!((1..=3).contains(&order) && nodes.len() >= order);
    let (s, t) = (nodes[0], target);
    let h = t.lambda - s.lambda;
    let hh = -h;
    let h_phi_1 = hh.exp_m1();
    let b_h = hh.exp_m1();
    // r_k = (λ_k − λ_s)/h for the earlier nodes, then 1 for t.
    let mut rks: Vec<f64> = (1..order)
        .map(|k| (nodes[k].lambda - s.lambda) / h)
        .collect();
    rks.push(1.0);
    let rhos = if order == 1 {
        vec![0.5]
    } else {
        let mut r = Vec::with_capacity(order);
        let mut b = Vec::with_capacity(order);
        let mut factorial = 1.0;
        for i in 1..=order {
            r.push(
                rks.iter()
                    .map(|rk| rk.powi(i as i32 - 1))
                    .collect::<Vec<f64>>(),
            );
            // h·φ_{i+1}(h) · i! / B(h), with h here the signed step −h.
            b.push(hh * phi(i + 1, hh) * factorial / b_h);
            factorial *= (i + 1) as f64;
        }
        solve(r, b)
    };
    let ratio = t.sigma / s.sigma;
    let mut w = [0.0; 4];
    // − α_t·h_φ₁·m_s
    w[1] -= t.alpha * h_phi_1;
    // − α_t·B(h)·(Σ ρ_k (m_k − m_s)/r_k + ρ_last (m_t − m_s))
    for k in 1..order {
        let c = -t.alpha * b_h * rhos[k - 1] / rks[k - 1];
        w[k + 1] += c;
        w[1] -= c;
    }
    let c = -t.alpha * b_h * rhos[order - 1];
    w[0] += c;
    w[1] -= c;
    (ratio, w, 1.0 - ratio + t.alpha * h_phi_1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(lambda: f64) -> Node {
        Node::at_lambda(lambda, 0.2)
    }

    /// A constant data prediction is reproduced exactly (the weights on m sum to the exact
    /// exponential-integrator weight), and UniC-1 is the trapezoid rule.
    #[test]
    fn consistency_and_trapezoid() {
        let nodes = [node(0.4), node(-0.2), node(-0.9)];
        let t = node(1.1);
        let h = t.lambda - nodes[0].lambda;
        for order in 1..=3 {
            let (a, w, c_mu) = unic_corrected_state(order, t, &nodes);
            let sum: f64 = w.iter().sum();
            assert!(
                (sum + t.alpha * (-h).exp_m1()).abs() < 1e-14,
                "order {order}"
            );
            assert!((a - t.sigma / nodes[0].sigma).abs() < 1e-15);
            assert!(c_mu.is_finite());
        }
        let (_, w, _) = unic_corrected_state(1, t, &nodes);
        assert!(
            (w[0] - w[1]).abs() < 1e-15,
            "UniC-1 weighs m_t and m_s equally"
        );
    }
}
