using LoraEngine.Tensors.Kernels;
using Xunit;

namespace LoraEngine.Tensors.Tests.Kernels;

public class PtxKernelsTests
{
    const string Entry = """
        .version 8.0
        .target sm_90
        .address_size 64

        .visible .entry Kernel_K(
        	.param .u64 p
        )
        {
        	.local .align 4 .b8 __local_depot0[4];
        	.local .align 4 .b8 __local_depot1[4];
        	.reg .f32 %f<4>;
        	.reg .b64 %rd<4>;
        	mov.b64	%rd1, __local_depot0;
        	mov.b64	%rd2, __local_depot1;
        	st.local.f32	[%rd1], 0f00000000;
        	ld.local.f32	%f1, [%rd1];
        	add.f32	%f2, %f1, %f1;
        	st.local.f32	[%rd1], %f2;
        	st.local.f32	[%rd2], %f2;
        	ld.local.f32	%f3, [%rd2+0];
        	ret;
        }
        """;

    [Fact]
    public void A_local_used_only_whole_through_its_address_becomes_a_register_and_one_used_otherwise_stays()
    {
        var ptx = PtxKernels.PromoteScalarLocals(Entry);

        Assert.Contains("\t.reg .b32 %lp<1>;", ptx);
        Assert.DoesNotContain("__local_depot0", ptx);
        Assert.Contains("mov.b32\t%lp0, 0f00000000;", ptx);
        Assert.Contains("mov.b32\t%f1, %lp0;", ptx);
        Assert.Contains("mov.b32\t%lp0, %f2;", ptx);
        // depot1's address is also used with an offset: untouched.
        Assert.Contains(".local .align 4 .b8 __local_depot1[4];", ptx);
        Assert.Contains("mov.b64\t%rd2, __local_depot1;", ptx);
        Assert.Contains("st.local.f32\t[%rd2], %f2;", ptx);
    }

    [Fact]
    public void A_bound_entry_carries_its_group_size_and_groups_per_SM_before_its_body()
    {
        var ptx = PtxKernels.Bound(Entry, 256, 2);

        Assert.Contains("\t.param .u64 p\n)\n.maxntid 256, 1, 1\n.minnctapersm 2\n{\n", ptx);
        Assert.Equal(Entry.Length + ".maxntid 256, 1, 1\n.minnctapersm 2\n".Length, ptx.Length);
    }

    [Fact]
    public void PTX_with_functions_besides_the_entry_comes_back_unchanged() =>
        Assert.Equal(Entry + "\n.func F()\n{\n\tret;\n}\n", PtxKernels.PromoteScalarLocals(Entry + "\n.func F()\n{\n\tret;\n}\n"));
}
