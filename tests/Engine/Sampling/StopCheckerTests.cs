using LoraEngine.Sampling;
using Xunit;

namespace LoraEngine.Engine.Tests.Sampling;

public class StopCheckerTests
{
    [Fact]
    public void Finds_the_earliest_stop_string_including_across_the_previous_text()
    {
        Assert.Equal((6, "END"), StopChecker.Find("hello END there", ["there", "END"], 0));
        Assert.Equal((3, "xyz"), StopChecker.Find("abcxyz", ["xyz"], 5)); // started before the new text
        Assert.Equal((-1, null), StopChecker.Find("abc", ["d"], 0));
        Assert.Equal((-1, null), StopChecker.Find("abc", null, 0));
    }

    [Fact]
    public void Holds_back_a_tail_that_may_become_a_stop_string()
    {
        Assert.Equal(6, StopChecker.VisibleLength("hello ST", ["STOP"]));
        Assert.Equal(8, StopChecker.VisibleLength("hello ST", ["XY"]));
        Assert.Equal(5, StopChecker.VisibleLength("helloS", ["STOP", "S!"]));
    }
}
