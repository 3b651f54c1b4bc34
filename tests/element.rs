//! The storage types (`dgs::surgery::Element`): f16 and bf16 round-trip the values they can
//! represent exactly.

use dgs::surgery::Element;

#[test]
fn element_roundtrip_is_exact_for_representable_values() {
    for v in [0.0f32, 1.0, -2.5, 30720.0] {
        assert_eq!(dgs::half::f16::from_f32(v).to_f32(), v);
        assert_eq!(<dgs::half::bf16 as Element>::from_f32(v).to_f32(), v);
    }
}
